"""The static HTTP server behind ``reptile demo``: this machine only, its own folders only.

What it serves: the demo folder (``reptile/demo``) and ``--weights-dir`` at ``/weights/``; GET
and HEAD only, no directory listings, no dotfiles, nothing outside those folders
(:func:`safe_join`). What it answers: requests whose ``Host`` header is a loopback name, an IP
address, or the ``--host`` it was started with (:func:`host_allowed`), so a page on another
origin that rebinds its DNS name to 127.0.0.1 gets 421, not the files. How it holds up: each
connection times out after ``timeout_s`` seconds of silence (an idle or half-sent request frees
its thread), at most ``max_threads`` connections are served at once (more are closed at once),
and a client that disconnects mid-reply is not a traceback.
"""
from __future__ import annotations

import errno
import http.server
import ipaddress
import os
import socket
import sys
import threading
import urllib.parse
from functools import partial
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo"
WEIGHTS_PREFIX = "/weights/"

MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml",
        ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}

#: the page loads nothing from anywhere but its own origin
CSP = ("default-src 'self'; script-src 'self'; worker-src 'self'; style-src 'self'; "
       "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")

#: seconds a connection may stay silent (idle, or a request sent half-way) before it is closed
DEFAULT_TIMEOUT_S = 10.0
#: connections served at once; more are closed at once
DEFAULT_MAX_THREADS = 32


def safe_join(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or ``None`` if it would leave ``root``.

    ``..`` segments, absolute components, backslashes, NUL bytes, dotfiles and dot-folders
    (``.env``, ``.git/``), and symbolic links that point outside ``root`` or at a dotfile are
    all refused.
    """
    path = urllib.parse.unquote(url_path.split("?", 1)[0].split("#", 1)[0])
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p.startswith((".", "~")) or ":" in p for p in parts):
        return None
    root = root.resolve()
    target = root.joinpath(*parts) if parts else root
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        return None
    if resolved != root and root not in resolved.parents:
        return None
    if any(p.startswith(".") for p in resolved.relative_to(root).parts):
        return None
    return resolved


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address, including the IPv4 short forms ``inet_aton`` accepts (``127.1``)."""
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(h))
    except (OSError, ValueError):
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: a loopback address (``127.0.0.1``, ``127.1``,
    ``::1``) or ``localhost``."""
    ip = _ip(host)
    if ip is not None:
        return ip.is_loopback
    return host.lower().rstrip(".") == "localhost"


def host_allowed(header: str | None, served_host: str) -> bool:
    """Whether a request's ``Host`` header may be answered.

    Allowed: no header (HTTP/1.0 clients; browsers always send one), an IP address (a DNS
    rebinding attack always carries the attacker's *name*), ``localhost``, and the ``--host``
    the server was started with. Any port is accepted.
    """
    if header is None:
        return True
    h = header.strip().lower()
    if h.startswith("["):  # [v6]:port
        name = h[:h.find("]") + 1] if "]" in h else h
    else:
        name = h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    name = name.rstrip(".")
    if not name:
        return False
    if _ip(name) is not None or name == "localhost":
        return True
    return name == served_host.strip().lower().rstrip(".")


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``root`` (the demo folder) and ``/weights/`` from ``weights_dir``; GET and HEAD only,
    no directory listings, no dotfiles, nothing outside those folders, only to allowed hosts."""

    server_version = "reptile-demo"
    sys_version = ""
    timeout = DEFAULT_TIMEOUT_S  # socket timeout: idle and partial requests are dropped

    def __init__(self, *args, root: Path, weights_dir: Path, quiet: bool = True, served_host: str = "127.0.0.1",
                 **kwargs):
        self.root, self.weights_dir, self.quiet, self.served_host = root, weights_dir, quiet, served_host
        super().__init__(*args, directory=str(root), **kwargs)

    def translate_path(self, path: str) -> str:
        """The file a URL names ('' when it would leave the served folders)."""
        raw = urllib.parse.urlsplit(path).path
        if raw.startswith(WEIGHTS_PREFIX):
            found = safe_join(self.weights_dir, raw[len(WEIGHTS_PREFIX):])
        else:
            found = safe_join(self.root, raw)
        return str(found) if found is not None else ""

    def send_head(self):
        if not host_allowed(self.headers.get("Host"), self.served_host):
            self.send_error(421, "unknown host; open the demo at the address `reptile demo` printed")
            return None
        target = self.translate_path(self.path)
        if not target:
            self.send_error(403, "not served (outside the demo folders, or a dotfile)")
            return None
        p = Path(target)
        if p.is_dir():
            if not (p / "index.html").is_file():
                self.send_error(404, "no directory listings")
                return None
            if not urllib.parse.urlsplit(self.path).path.endswith("/"):
                self.send_response(301)
                self.send_header("Location", urllib.parse.urlsplit(self.path).path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            p = p / "index.html"
        if not p.is_file():
            self.send_error(404, "not found")
            return None
        try:
            f = open(p, "rb")
        except OSError:
            self.send_error(404, "not found")
            return None
        size = os.fstat(f.fileno()).st_size
        self.send_response(200)
        self.send_header("Content-Type", MIME.get(p.suffix.lower(), "application/octet-stream"))
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.end_headers()
        return f

    def end_headers(self) -> None:
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        self.send_error(405, "read-only")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)


class _Server(http.server.ThreadingHTTPServer):
    """A threading server with a cap on concurrent connections and quiet client disconnects."""

    daemon_threads = True
    max_threads = DEFAULT_MAX_THREADS

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_threads)
        super().server_activate()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):  # full: refuse this connection, keep serving the others
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return  # the client went away or went silent: nothing to report
        print(f"reptile demo: error serving {client_address[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)


class _ServerV6(_Server):
    address_family = socket.AF_INET6


def make_server(host: str = "127.0.0.1", port: int = 8765, weights_dir: Path | None = None,
                root: Path = DEMO_DIR, quiet: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S,
                max_threads: int = DEFAULT_MAX_THREADS) -> http.server.ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for the demo.

    Args:
        timeout_s: seconds a connection may stay silent before it is closed.
        max_threads: connections served at once (more are closed at once).

    Raises:
        OSError: the port is in use or the address cannot be bound (with a message saying so).
        NotADirectoryError: ``weights_dir`` is not a folder.
        ValueError: a port outside 0..65535, a non-positive timeout or thread cap.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number 0..65535 (0 picks a free one), got {port!r}")
    if not (timeout_s > 0) or isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
        raise ValueError(f"timeout_s must be > 0 and max_threads >= 1, got {timeout_s!r}, {max_threads!r}")
    weights_dir = Path(weights_dir) if weights_dir is not None else root / "weights"
    if not weights_dir.is_dir():
        raise NotADirectoryError(f"--weights-dir {weights_dir} is not a folder")
    handler_cls = type("Handler", (DemoHandler,), {"timeout": timeout_s})
    handler = partial(handler_cls, root=root.resolve(), weights_dir=weights_dir.resolve(), quiet=quiet,
                      served_host=host)
    ip = _ip(host)
    base = _ServerV6 if ip is not None and ip.version == 6 else _Server
    cls = type("Server", (base,), {"max_threads": max_threads})
    bind = str(ip) if ip is not None else host  # 127.1 binds as 127.0.0.1
    try:
        server = cls((bind, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, f"port {port} on {host} is already in use; choose another with "
                                            f"--port (or --port 0 for any free port)") from None
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}; check --host "
                               f"(default 127.0.0.1, this machine only) and --port") from None
    return server
