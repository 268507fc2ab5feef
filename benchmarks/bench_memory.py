"""Time and peak memory of MAML, FOMAML and Reptile against k (the paper: Reptile needs less of both).

One task's meta-gradient (``reptile.algorithms.meta_gradient``, SGD inner loop, alpha 0.01) on the
paper's Omniglot CNN (64 filters, 5-way, 28x28, minibatches of 10) for k minibatches (MAML and
FOMAML: k - 1 inner steps and the k-th minibatch for the outer loss; Reptile: k steps).

Two memory measures, because ``tracemalloc`` does not see torch's CPU allocator:

* ``peak_alloc_mib``: the peak of the running sum of tensor allocations minus frees recorded by
  ``torch.profiler(profile_memory=True)`` during one meta-gradient, in time order -- memory the
  computation allocates (inputs and parameters that exist before are not counted).
* ``rss_growth_mib``: in a fresh subprocess per algorithm (Linux), the peak resident set
  (``VmHWM``, reset before each k through ``/proc/self/clear_refs``) minus the resident set just
  before the meta-gradient -- what the operating system saw, allocator overheads included.

Time: median over interleaved rounds, as a ratio to Reptile at the same k (the baseline of each k).
MAML's memory slope per step is a least-squares line through its peaks against k.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
from typing import Callable

import numpy as np
import torch

from benchmarks.common import compare
from reptile.algorithms import meta_gradient
from reptile.losses import make_loss, params_of
from reptile.models import OmniglotCNN, seeded_init
from reptile.profiling import peak_alloc_bytes

ALGORITHMS = ("maml", "fomaml", "reptile")
KS = (1, 2, 4, 8, 12, 16, 20)
QUICK_KS = (2, 4, 8)
ALPHA = 0.01
MIB = 2.0 ** 20


def setup(max_k: int, filters: int = 64):
    model = seeded_init(0, lambda: OmniglotCNN(n_way=5, filters=filters))
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(max_k, 10, 1, 28, 28, generator=g), torch.randint(0, 5, (max_k, 10), generator=g)
    return make_loss(model, "cross_entropy"), params_of(model), xs, ys


def valid(alg: str, k: int) -> bool:
    return k >= (1 if alg == "reptile" else 2)


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _release_free_memory() -> None:
    """Give memory that glibc keeps after frees back to the OS, so the next peak starts clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_child(alg: str, ks: list[int]) -> None:
    """Subprocess entry: print JSON {k: peak RSS growth in bytes} of one meta-gradient per k.

    Linux: the peak is ``VmHWM`` of ``/proc/self/status``, reset before each k by writing 5 to
    ``/proc/self/clear_refs``; the growth is measured from ``VmRSS`` just before (after returning
    freed memory to the OS). ``ru_maxrss`` is not used: Linux carries it over from the parent
    process across ``exec``.
    """
    torch.set_num_threads(1)
    loss_fn, phi, xs, ys = setup(max(ks))
    ks = sorted(k for k in ks if valid(alg, k))
    for _ in range(2):  # warm-up: allocator, oneDNN primitive caches
        meta_gradient(alg, loss_fn, phi, (xs[:ks[0]], ys[:ks[0]]), ALPHA)
    out = {}
    for k in ks:
        _release_free_memory()
        before = _proc_status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        meta_gradient(alg, loss_fn, phi, (xs[:k], ys[:k]), ALPHA)
        out[k] = (_proc_status_kib("VmHWM") - before) * 1024
    print(json.dumps(out))


def rss_growth(alg: str, ks: list[int], timeout: float = 900) -> dict[int, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", "--rss-child", alg,
                           ",".join(map(str, ks))], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS measurement of {alg} failed:\n{proc.stderr[-2000:]}")
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def slope(ks: list[int], values: list[float]) -> float:
    """Least-squares slope of ``values`` against ``ks``."""
    return float(np.polyfit(np.asarray(ks, float), np.asarray(values, float), 1)[0]) if len(ks) >= 2 else float("nan")


def cuda_peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak CUDA memory allocated during ``fn`` above what was allocated when it started (bytes)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - start)


def run(quick: bool, repeats: int, log: Callable[[str], None] = print, device: str = "cpu",
        ks: list[int] | None = None) -> tuple[list[dict], dict[str, float]]:
    """Time and peak memory against k. On a GPU the peak is ``torch.cuda.max_memory_allocated``
    (above the start) and the resident-set measurement is skipped."""
    cuda = device.startswith("cuda")
    ks = list(ks or (QUICK_KS if quick else KS))
    loss_fn, phi, xs, ys = setup(max(ks))
    phi = {n: v.to(device) for n, v in phi.items()}
    xs, ys = xs.to(device), ys.to(device)
    rows = []
    for k in ks:
        batches = (xs[:k], ys[:k])
        cands = {a: (lambda a=a: (meta_gradient(a, loss_fn, phi, batches, ALPHA),
                                  torch.cuda.synchronize() if cuda else None))
                 for a in ALGORITHMS if valid(a, k)}
        res = compare(cands, "reptile", repeats, warmup=1)
        for a in cands:
            peak = cuda_peak_bytes(cands[a], device) if cuda else peak_alloc_bytes(cands[a])
            rows.append({"suite": "memory_vs_k", "device": device, "setting": "omniglot_cnn", "algorithm": a, "k": k,
                         "candidate": a, "baseline": "reptile (same k)", "ratio_cpu": res[a].ratio_cpu,
                         "ratio_wall": res[a].ratio_wall, "cpu_ms": res[a].cpu_s * 1e3,
                         "wall_ms": res[a].wall_s * 1e3, "peak_alloc_mib": peak / MIB, "repeats": repeats})
            log(f"  k={k:<3} {a:<8} {res[a].cpu_s * 1e3:8.1f} ms cpu ({res[a].ratio_cpu:5.2f}x Reptile)  "
                f"peak alloc {peak / MIB:7.2f} MiB")
    for a in () if cuda else ALGORITHMS:
        growth = rss_growth(a, ks)
        for r in rows:
            if r["algorithm"] == a and r["k"] in growth:
                r["rss_growth_mib"] = growth[r["k"]] / MIB
        log(f"  RSS high-water growth {a:<8} " + "  ".join(f"k={k}: {v / MIB:.1f}" for k, v in growth.items()) + " MiB")
    slopes = {}
    for a in ALGORITHMS:
        mine = [r for r in rows if r["algorithm"] == a]
        slopes[f"{a}_peak_alloc_mib_per_step"] = slope([r["k"] for r in mine], [r["peak_alloc_mib"] for r in mine])
        slopes[f"{a}_rss_mib_per_step"] = float("nan") if cuda else slope([r["k"] for r in mine if "rss_growth_mib" in r],
                                                [r["rss_growth_mib"] for r in mine if "rss_growth_mib" in r])
        slopes[f"{a}_cpu_ms_per_step"] = slope([r["k"] for r in mine], [r["cpu_ms"] for r in mine])
    return rows, slopes


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], [int(k) for k in sys.argv[3].split(",")])
    else:
        sys.exit("usage: python -m benchmarks.bench_memory --rss-child ALGORITHM K1,K2,... "
                 "(the suite runs it; use python -m benchmarks)")
