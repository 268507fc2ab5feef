"""Benchmark: Hessian-vector product time over gradient time, for the sine MLP and the Omniglot CNN.

For each model, one minibatch, and each variant: ``--repeats`` interleaved rounds after ``--warmup``
(``reptile.profiling.compare``), the median of the paired ratio to the same round's gradient, in CPU
time on a CPU (other users' load does not inflate it) and in wall time on a GPU (each run synchronizes):

* ``grad``              -- ``torch.func.grad(loss)(phi, batch)``, the baseline (ratio 1);
* ``hvp (default)``     -- ``analysis.hvp(loss_fn, phi, batch, v)`` as it comes (``method="auto"``:
  plain-autograd reverse-over-reverse; compiled channels-last for paper-size CNNs, its one-time
  compilation done in the warm-up and reported as ``compile_s``);
* ``hvp fwd-rev``       -- ``analysis.hvp(..., method="fwd-rev")``: ``jvp`` of ``grad``, gradient included;
* ``hvp rev-rev``       -- ``analysis.hvp(..., method="rev-rev")``: ``vjp`` of ``grad``, gradient included;
* ``product rev-rev``   -- ``HVPOperator(method="rev-rev")(v)``: one more product once the gradient
  and its graph are built (what eigen-solvers and the Taylor expansion pay per product);
* ``product fwd-rev``   -- ``HVPOperator(method="fwd-rev")(v)`` (``torch.func.linearize``);
* ``build rev-rev`` / ``build fwd-rev`` -- constructing the operator (gradient + graph / tracing).
* with ``--compile``: ``grad`` and ``analysis.hvp_fn(..., compile=True)`` for both methods
  (compile time excluded, reported separately); ``ratio_to_compiled_grad`` compares like with like.

Models: ``MLP((1, 64, 64, 1), "tanh")`` on 10 sine points (float64, the analysis setting, and
float32), ``OmniglotCNN(n_way=5)`` with batch norm on 10 images 28x28 (float32; also
channels-last). Prints a table and writes ``benchmarks/results/bench_hvp.csv`` (or ``--out``).

Run: ``.venv/bin/python benchmarks/bench_hvp.py [--repeats 30] [--warmup 5] [--threads N] [--device cpu]
[--models mlp cnn] [--compile]``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.func import grad

from analysis import artifacts
from reptile.profiling import compare
from analysis.hessian import HVPOperator, hvp, hvp_fn
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, repeats: int, warmup: int, device: str) -> tuple[float, float]:
    """Median and interquartile range (seconds) of ``fn()`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    q1, q3 = np.percentile(times, [25, 75])
    return statistics.median(times), float(q3 - q1)


def cases(device: str, models: list[str]):
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32) if "mlp" in models else ():
        torch.manual_seed(0)  # benchmark only: the model's default init needs the global RNG
        model = MLP((1, 64, 64, 1), "tanh").to(device=device, dtype=dtype)
        x = (torch.rand(10, 1, generator=gen, dtype=dtype) * 10 - 5).to(device)
        yield f"MLP 1-64-64-1 tanh ({str(dtype)[6:]})", model, (x, torch.sin(x)), "mse"
    for channels_last in (False, True) if "cnn" in models else ():
        torch.manual_seed(0)
        model = OmniglotCNN(n_way=5).to(device)
        x = torch.rand(10, 1, 28, 28, generator=gen).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.arange(10, device=device) % 5
        yield f"OmniglotCNN 5-way b=10 (float32{', channels-last' if channels_last else ''})", model, (x, y), \
            "cross_entropy"


def run(repeats: int, warmup: int, device: str, models: list[str], compile_: bool = False) -> pd.DataFrame:
    rows = []
    for name, model, batch, crit in cases(device, models):
        f = make_loss(model, crit)
        phi = params_of(model)
        v = {k: torch.randn_like(t) for k, t in phi.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            op_rr, op_fr = HVPOperator(f, phi, batch, "rev-rev"), HVPOperator(f, phi, batch, "fwd-rev")
            tic = time.perf_counter()
            hvp(f, phi, batch, v)
            _sync(device)
            first_default = time.perf_counter() - tic
            variants = {
                "grad": lambda: grad(f)(phi, batch),
                "hvp (default)": lambda: hvp(f, phi, batch, v),
                "hvp fwd-rev": lambda: hvp(f, phi, batch, v, "fwd-rev"),
                "hvp rev-rev": lambda: hvp(f, phi, batch, v, "rev-rev"),
                "product rev-rev": lambda: op_rr(v),
                "product fwd-rev": lambda: op_fr(v),
                "build rev-rev": lambda: HVPOperator(f, phi, batch, "rev-rev"),
            }
            # interleaved rounds, paired ratios to the same round's gradient (reptile.profiling.compare):
            # CPU time on a CPU (robust to other users' load), wall time with synchronization on a GPU
            cands = {n: ((lambda fn=fn: (fn(), _sync(device))) if device.startswith("cuda") else fn)
                     for n, fn in variants.items()}
            res = compare(cands, "grad", repeats, warmup=warmup)
            cpu = not device.startswith("cuda")
            for variant, t in res.items():
                rows.append(dict(model=name, variant=variant, median_ms=(t.cpu_s if cpu else t.wall_s) * 1e3,
                                 ratio_iqr_half=t.spread(),
                                 ratio_to_grad=t.ratio_cpu if cpu else t.ratio_wall, repeats=repeats,
                                 **({"compile_s": first_default} if variant == "hvp (default)" else {})))
            base = (res["grad"].cpu_s if cpu else res["grad"].wall_s)
            t = time.perf_counter()
            HVPOperator(f, phi, batch, "fwd-rev")
            build = time.perf_counter() - t
            rows.append(dict(model=name, variant="build fwd-rev (once)", median_ms=build * 1e3, iqr_ms=float("nan"),
                             ratio_to_grad=build / base, repeats=1))
            if compile_:
                fns = {"grad [compiled]": torch.compile(lambda p, b, w: grad(f)(p, b)),
                       "hvp rev-rev [compiled]": hvp_fn(f, "rev-rev", compile=True),
                       "hvp fwd-rev [compiled]": hvp_fn(f, "fwd-rev", compile=True)}
                cbase = None
                for variant, c in fns.items():
                    t = time.perf_counter()
                    c(phi, batch, v)
                    _sync(device)
                    ctime = time.perf_counter() - t
                    med, iqr = median_time(lambda: c(phi, batch, v), repeats, warmup, device)
                    cbase = med if cbase is None else cbase
                    rows.append(dict(model=name, variant=variant, median_ms=med * 1e3, iqr_ms=iqr * 1e3,
                                     ratio_to_grad=med / base, ratio_to_compiled_grad=med / cbase,
                                     compile_s=ctime, repeats=repeats))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", choices=["mlp", "cnn"], default=["mlp", "cnn"])
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd grad and HVPs (slow to compile)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_hvp.csv")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    df = run(args.repeats, args.warmup, args.device, args.models, args.compile)
    df.insert(0, "device", args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()}, "
                                                                    f"{torch.get_num_threads()} threads)")
    artifacts.write_csv(args.out, df)
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(df.drop(columns=["device", "repeats"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"\n{df.device.iloc[0]}, torch {torch.__version__}, median of {args.repeats} after {args.warmup} "
          f"warm-up runs; CSV: {args.out}")
    for _, r in df[df.variant == "hvp (default)"].iterrows():
        print(f"HVP/grad (default analysis.hvp): {r.ratio_to_grad:.2f}x  {r.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
