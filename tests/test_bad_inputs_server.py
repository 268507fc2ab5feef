"""Bad input at the demo server and `reptile demo`: a clear error and nothing half-written (issue 9; split from the
former tests/test_bad_inputs.py, issue 16 item 6). Harness: tests/bad_input_harness.py."""
from __future__ import annotations

from bad_input_harness import *  # noqa: F401,F403  (fixtures ctx, sine_run, server and the helpers)


def test_cli_demo_port_out_of_range(ctx):  # was an OverflowError traceback from bind()
    ctx.cli(["demo", "--port", "70000"], 2, "--port", "0..65535")
    ctx.cli(["demo", "--port", "-1"], 2, "--port")


def test_cli_demo_port_in_use(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ctx.cli(["demo", "--port", port], 1, f"port {port} on 127.0.0.1 is already in use", "--port 0")


def test_cli_demo_weights_dir_not_a_folder(ctx):
    ctx.cli(["demo", "--port", "0", "--weights-dir", ctx.afile()], 1, "is not a folder")


def test_server_port_in_use(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} on 127.0.0.1 is already in use; choose another"):
            make_server("127.0.0.1", port)
    with pytest.raises(ValueError, match=r"port must be a whole number 0..65535"):  # was OverflowError
        make_server("127.0.0.1", 70000)


def test_server_dotdot_path(ctx):
    _refused(ctx.server, "/../secret.json", "/weights/../../secret.json", "/weights/../secret.json",
             "/../../../../etc/passwd")


def test_server_encoded_dotdot_path(ctx):
    _refused(ctx.server, "/%2e%2e/secret.json", "/weights/%2e%2e/secret.json", "/weights/..%2fsecret.json",
             "/%2E%2E/%2E%2E/etc/passwd", "/weights/..%5csecret.json", "/weights/sine.json%00.png")


def test_server_absolute_path(ctx):
    _refused(ctx.server, "//etc/passwd", "/weights//etc/passwd", "/%2fetc%2fpasswd", "/weights/%2Fetc/passwd",
             "/~root/.bashrc", "/C:/Windows/win.ini")


def test_server_symlink_out_of_folder(ctx):
    assert _get(ctx.server, "/weights/sine.json") == (200, b'{"format": "x"}')  # the folder itself is served
    status, body = _get(ctx.server, "/weights/link.json")
    assert status == 403 and b"TOPSECRET" not in body
