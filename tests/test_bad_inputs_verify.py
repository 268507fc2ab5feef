"""Bad input at `reptile verify`: a clear error and nothing half-written (issue 9; split from the
former tests/test_bad_inputs.py, issue 16 item 6). Harness: tests/bad_input_harness.py."""
from __future__ import annotations

from bad_input_harness import *  # noqa: F401,F403  (fixtures ctx, sine_run, server and the helpers)


def test_cli_verify_bad_mode(ctx):
    ctx.cli(["verify", "--quick", "--full"], 2, "not allowed with argument")


def test_cli_verify_unknown_provider(ctx):  # was exit 1 with a ModuleNotFoundError traceback on stderr
    ctx.cli(["verify", "--only", "nope.module"], 2, "'nope.module' is not a registered check provider",
            "analysis.taylor_checks", "--problem module:factory")


def test_cli_verify_only_never_imports_an_unregistered_module(ctx):  # `--only this` printed the Zen of Python
    import sys
    sys.modules.pop("this", None)
    ctx.cli(["verify", "--only", "this"], 2, "'this' is not a registered check provider")
    assert "this" not in sys.modules


def test_cli_verify_unwritable_out(ctx):  # was "[Errno 20] Not a directory"
    f = ctx.afile()
    ctx.cli(["verify", "--quick", "--out", f / "report"], 1, "is a file, not a folder", "choose another --out")


def test_verify_api_bad_mode(ctx):
    with ctx.unchanged(), pytest.raises(ValueError, match=r"unknown verify mode 'fast'; choose one of \('quick'"):
        run_verify("fast", ctx.tmp / "report")


def test_verify_api_bad_out_path(ctx):  # was NotADirectoryError
    f = ctx.afile()
    with ctx.unchanged(), pytest.raises(ValueError, match="out_dir .* is a file, not a folder; choose another"):
        run_verify("quick", f / "report", providers=["analysis.taylor_checks"])
