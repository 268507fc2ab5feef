"""Issue 18 item 6: the demo server answers only this machine's names, serves no dotfiles, drops
idle and half-sent connections, caps its threads, and is quiet when a client goes away."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from child_signals import default_sigint
from reptile.demo_server import host_allowed, is_loopback, make_server


@pytest.fixture
def weights(tmp_path) -> Path:
    w = tmp_path / "weights"
    (w / ".git").mkdir(parents=True)
    (w / "sine.json").write_text('{"format": "x"}')
    (w / ".env").write_text("API_KEY=TOPSECRET")
    (w / ".git" / "config").write_text("[remote] TOPSECRET")
    (w / "big.json").write_bytes(b"x" * (8 << 20))
    return w


def _serve(srv):
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return t


@pytest.fixture
def server(weights):
    srv = make_server("127.0.0.1", 0, weights, timeout_s=1.0, max_threads=2)
    _serve(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _get(srv, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.putrequest("GET", path, skip_host=host is not None, skip_accept_encoding=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_only_loopback_names_ip_addresses_and_the_served_host_are_answered(server):
    port = server.server_address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "LOCALHOST."):
        assert _get(server, "/weights/sine.json", host)[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io"):
        status, body = _get(server, "/weights/sine.json", host)
        assert status == 421 and b'"format"' not in body, host


def test_host_allowed_rules():
    assert host_allowed(None, "127.0.0.1") and host_allowed("192.168.1.5:8765", "0.0.0.0")
    assert host_allowed("demo.lan:8765", "demo.lan") and not host_allowed("other.lan", "demo.lan")
    assert not host_allowed("", "127.0.0.1") and not host_allowed("attacker.com", "127.0.0.1")


def test_no_dotfiles_are_served(server):
    for path in ("/weights/.env", "/weights/.git/config", "/weights/%2eenv", "/weights/sub/../.env"):
        status, body = _get(server, path)
        assert status in (403, 404) and b"TOPSECRET" not in body, path


def _silent_connection(srv) -> socket.socket:
    s = socket.create_connection(srv.server_address[:2], timeout=30)
    return s


def test_idle_and_half_sent_connections_are_closed(server):
    idle = _silent_connection(server)
    partial = _silent_connection(server)
    partial.sendall(b"GET /weights/sine.json HTTP/1.1\r\nHost: localhost\r\n")  # never finished
    try:
        for s in (idle, partial):
            data = s.recv(1024)  # the server (timeout 1 s) closes it; without a timeout this blocks 30 s
            assert b"200 OK" not in data
    finally:
        idle.close()
        partial.close()
    assert _get(server, "/weights/sine.json")[0] == 200


def test_connections_beyond_the_thread_cap_are_refused_and_the_server_keeps_serving(weights):
    srv = make_server("127.0.0.1", 0, weights, timeout_s=30.0, max_threads=2)
    _serve(srv)
    held = [_silent_connection(srv) for _ in range(2)]  # both threads busy waiting for a request
    try:
        time.sleep(0.5)  # let the server accept them (no assertion on time)
        extra = _silent_connection(srv)
        try:
            extra.sendall(b"GET /weights/sine.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                data = extra.recv(1024)
            except ConnectionResetError:
                data = b""
            assert data == b"", "a connection beyond the cap was served"
        finally:
            extra.close()
    finally:
        for s in held:
            s.close()
    t0 = time.time()
    while True:  # the two held threads end once their clients have gone
        try:
            if _get(srv, "/weights/sine.json")[0] == 200:
                break
        except (ConnectionError, http.client.HTTPException):
            pass
        assert time.time() - t0 < 30, "the server did not recover"
        time.sleep(0.1)
    srv.shutdown()
    srv.server_close()


def test_a_client_that_disconnects_is_not_a_traceback(server, capfd):
    base = threading.active_count()
    for _ in range(3):
        s = socket.create_connection(server.server_address[:2], timeout=10)
        s.sendall(b"GET /weights/big.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not a clean close
        s.close()
    t0 = time.time()
    while threading.active_count() > base and time.time() - t0 < 20:
        time.sleep(0.05)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err


def test_ipv4_short_forms_are_loopback():
    for host in ("127.0.0.1", "127.1", "127.0.1", "::1", "[::1]", "localhost", "2130706433"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "192.168.0.1", "::", "example.com"):
        assert not is_loopback(host), host


def test_reptile_demo_on_127_1_gives_no_warning(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "reptile", "demo", "--host", "127.1", "--port", "0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)  # SIGINT is ignored in a CI step run in the background
    try:
        line = proc.stdout.readline()
        assert line.startswith("Reptile demo at http://127.0.0.1:"), (line, proc.stderr.read())
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert "warning" not in err and "Traceback" not in err, err
