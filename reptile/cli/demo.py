"""``reptile demo`` (serve the in-browser demo) and ``reptile export-demo CHECKPOINT``."""
from __future__ import annotations

import argparse
import errno
import http.server
import ipaddress
import os
import socket
import sys
import urllib.parse
from functools import partial
from pathlib import Path

from ..paths import check_output_file
from ..threads import apply_threads
from .argtypes import add_threads_flag, nonneg_int, port_number, positive_int, thread_count

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
WEIGHTS_PREFIX = "/weights/"

MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml",
        ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}

#: the page loads nothing from anywhere but its own origin
CSP = ("default-src 'self'; script-src 'self'; worker-src 'self'; style-src 'self'; "
       "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")


def safe_join(root: Path, url_path: str) -> Path | None:
    """The file under ``root`` that ``url_path`` names, or ``None`` if it would leave ``root``.

    ``..`` segments, absolute components, backslashes, NUL bytes and symbolic links that point
    outside ``root`` are all refused.
    """
    path = urllib.parse.unquote(url_path.split("?", 1)[0].split("#", 1)[0])
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." or p.startswith("~") or ":" in p for p in parts):
        return None
    root = root.resolve()
    target = root.joinpath(*parts) if parts else root
    try:
        resolved = target.resolve()
    except (OSError, RuntimeError):
        return None
    if resolved != root and root not in resolved.parents:
        return None
    return resolved


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``root`` (the demo folder) and ``/weights/`` from ``weights_dir``; GET and HEAD only,
    no directory listings, nothing outside those folders."""

    server_version = "reptile-demo"
    sys_version = ""

    def __init__(self, *args, root: Path, weights_dir: Path, quiet: bool = True, **kwargs):
        self.root, self.weights_dir, self.quiet = root, weights_dir, quiet
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
        target = self.translate_path(self.path)
        if not target:
            self.send_error(403, "outside the demo folder")
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
    daemon_threads = True


class _ServerV6(_Server):
    address_family = socket.AF_INET6


def make_server(host: str = "127.0.0.1", port: int = 8765, weights_dir: Path | None = None,
                root: Path = DEMO_DIR, quiet: bool = True) -> http.server.ThreadingHTTPServer:
    """A bound (not yet serving) HTTP server for the demo.

    Raises:
        OSError: the port is in use or the address cannot be bound (with a message saying so).
        NotADirectoryError: ``weights_dir`` is not a folder.
        ValueError: a port outside 0..65535.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number 0..65535 (0 picks a free one), got {port!r}")
    weights_dir = Path(weights_dir) if weights_dir is not None else root / "weights"
    if not weights_dir.is_dir():
        raise NotADirectoryError(f"--weights-dir {weights_dir} is not a folder")
    handler = partial(DemoHandler, root=root.resolve(), weights_dir=weights_dir.resolve(), quiet=quiet)
    cls = _Server
    try:
        if ipaddress.ip_address(host).version == 6:
            cls = _ServerV6
    except ValueError:
        pass  # a host name: let the socket layer resolve it
    try:
        server = cls((host, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, f"port {port} on {host} is already in use; choose another with "
                                            f"--port (or --port 0 for any free port)") from None
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror or e}; check --host "
                               f"(default 127.0.0.1, this machine only) and --port") from None
    return server


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_demo(args: argparse.Namespace) -> int:
    server = make_server(args.host, args.port, args.weights_dir, quiet=not args.verbose)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}, reachable from other machines", file=sys.stderr)
    wd = args.weights_dir or DEMO_DIR / "weights"
    print(f"Reptile demo at http://{shown}:{port}/  (weights from {wd}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..demo_export import export_checkpoint

    apply_threads(args.threads)
    if args.out is not None:
        check_output_file(args.out)
    out, obj = export_checkpoint(args.checkpoint, args.out, args.kind, steps=args.steps, init_seed=args.init_seed)
    n = sum(len(e["b64"]) * 3 // 4 // 4 for e in obj["params"].values())
    src = obj["source"]
    print(f"wrote {out}: {obj['kind']} weights, {obj['model']['name']} {obj['model']['kwargs']}, {n} parameters, "
          f"from {src['checkpoint']} (iteration {src['iteration']}); fine-tuning {obj['finetune']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="serve the in-browser demo (few-shot drawing, sine waves)",
                       description="Serve the interactive demo on this machine: draw three characters and "
                                   "a query, or click points of a sine wave, and watch a Reptile-trained "
                                   "network fine-tune in your browser next to a randomly initialized one. "
                                   "Serves only the demo's own folder (and --weights-dir at /weights/).")
    p.add_argument("--port", type=port_number, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--weights-dir", type=Path, default=None,
                   help="folder holding fewshot.json and sine.json (default: the weights shipped with the package)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    # the demo fine-tunes in the browser: the server computes nothing, so the flag only keeps the
    # command line uniform (checked like everywhere, then unused; torch is not imported)
    p.add_argument("--threads", type=thread_count, default=None, metavar="N",
                   help="torch CPU threads (default 1, or $OMP_NUM_THREADS when set), accepted as on every "
                        "command but unused here: the demo computes in the browser")
    p.set_defaults(func=run_demo)

    e = sub.add_parser("export-demo", help="export a checkpoint to the demo's weights format",
                       description="Write a checkpoint's weights as the JSON file the in-browser demo reads "
                                   "(fewshot: a 3-way OmniglotCNN with batch norm; sine: a 1-...-1 MLP).")
    e.add_argument("checkpoint", type=Path, help="checkpoint file or run folder (its newest good checkpoint)")
    e.add_argument("--out", type=Path, default=None, help="output file (default ./<kind>.json)")
    e.add_argument("--kind", choices=("fewshot", "sine"), default=None, help="which panel (default: from the model)")
    e.add_argument("--steps", type=positive_int, default=None,
                   help="few-shot fine-tuning steps the page starts with (default 5)")
    e.add_argument("--init-seed", type=nonneg_int, default=None,
                   help="seed of the random initialization shown for comparison (default: the training seed)")
    add_threads_flag(e)
    e.set_defaults(func=run_export)
