"""``reptile demo`` (serve the in-browser demo) and ``reptile export-demo CHECKPOINT``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# the server is library code (reptile.demo_server); its names stay importable from here
from ..demo_server import (CSP, DEMO_DIR, MIME, WEIGHTS_PREFIX, DemoHandler, host_allowed,  # noqa: F401
                           is_loopback, make_server, safe_join)
from ..paths import check_output_file
from ..threads import apply_threads
from .argtypes import add_threads_flag, nonneg_int, port_number, positive_int, thread_count


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
