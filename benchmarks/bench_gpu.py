"""The GPU benchmark table (``scripts/gpu_check.sh`` runs it): ``python -m benchmarks.bench_gpu --device cuda``.

Sections, each a ratio to a baseline measured in the same process (interleaved rounds, medians;
every candidate synchronizes the device before its timer stops):

1. one meta-iteration of Reptile at the paper's Omniglot 5-way settings (meta-batch 5, k = 5 inner
   Adam steps of batch 10, 64 filters, float32): the plain PyTorch loop (``bench_meta``'s reference),
   the default ``TrainConfig()`` (compile/channels_last "auto"), eager, compile, and the meta-batch's
   tasks in one ``vmap`` (fresh Adam state per task, as the reference); then the same with 32 tasks;
2. HVP time over gradient time for the sine MLP and the Omniglot CNN (``bench_hvp.run``);
3. time and peak CUDA memory of MAML, FOMAML and Reptile against k (``bench_memory.run``), with
   MAML's slope in MiB per inner step.

Writes every row to ``benchmarks/results/gpu.csv`` (or ``--out``) with the device's name. Sized to
finish in a few minutes on an H100/H200 (compilation included).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks import bench_hvp, bench_memory, bench_meta
from benchmarks.common import compare, first_calls
from reptile.models import seeded_init


def meta_rows(device: str, repeats: int, meta_batches: tuple[int, ...], log=print) -> list[dict]:
    s = bench_meta.SETTINGS["omniglot"]
    rows = []
    for mb in meta_batches:
        tasks = bench_meta.make_tasks(s, device=device, meta_batch=mb)
        model = seeded_init(0, s["model"]).to(device)
        cands = {"reference": bench_meta.reference_first_order(copy.deepcopy(model), tasks, "reptile", s["adam_lr"])}
        variants = {"default": {}, "eager": bench_meta.VARIANTS["eager"], "compile": bench_meta.VARIANTS["compile"],
                    "vmap": {"batching": "vmap"}}
        paths = {}
        for name, over in variants.items():
            trainer = bench_meta.make_trainer(copy.deepcopy(model), tasks, "reptile", s, **over)
            paths[name] = trainer.fast_path.describe()
            cands[name] = lambda t=trainer: t.step()
        cands = bench_meta._synced(cands, device)
        first = first_calls(cands, log, f"meta-batch {mb} ")
        res = compare(cands, "reference", repeats, warmup=1)
        for name, t in res.items():
            rows.append({"section": "meta_iteration", "setting": "omniglot 5-way reptile", "meta_batch": mb,
                         "candidate": name, "baseline": "reference", "ratio_wall": t.ratio_wall,
                         "wall_ms": t.wall_s * 1e3, "first_call_s": first[name], "path": paths.get(name, ""),
                         "repeats": repeats})
            log(f"  meta-batch {mb:<3} {name:<10} {t.ratio_wall:5.2f}x the plain loop  ({t.wall_s * 1e3:.1f} ms)")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:1, ... (cpu works too, slowly)")
    p.add_argument("--repeats", type=int, default=7, help="rounds per comparison (default 7)")
    p.add_argument("--meta-batches", default="5,32", help="meta-batch sizes of section 1 (default 5,32)")
    p.add_argument("--ks", default="2,4,8,12,16", help="k values of the memory section (default 2,4,8,12,16)")
    p.add_argument("--sections", default="meta,hvp,memory", help="among meta,hvp,memory")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.csv")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA device is available (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    log = lambda s: print(s, flush=True)
    log(f"device: {name} ({args.device}), torch {torch.__version__}")
    sections = args.sections.split(",")
    rows: list[dict] = []
    t0 = time.time()
    if "meta" in sections:
        log("== one meta-iteration vs the plain PyTorch loop (Omniglot 5-way, Reptile)")
        rows += meta_rows(args.device, args.repeats, tuple(int(m) for m in args.meta_batches.split(",")), log)
    if "hvp" in sections:
        log("== HVP time over gradient time")
        df = bench_hvp.run(max(args.repeats * 3, 10), 3, args.device, ["mlp", "cnn"])
        for r in df.to_dict("records"):
            rows.append({"section": "hvp", "setting": r["model"], "candidate": r["variant"], "baseline": "grad",
                         "ratio_wall": r["ratio_to_grad"], "wall_ms": r["median_ms"], "repeats": r["repeats"],
                         **({"first_call_s": r["compile_s"]} if r.get("compile_s") == r.get("compile_s")
                            and "compile_s" in r else {})})
        for r in df[df.variant.isin(["hvp (default)"])].to_dict("records"):
            log(f"  HVP/grad (default analysis.hvp): {r['ratio_to_grad']:.2f}x  {r['model']}")
    if "memory" in sections:
        log("== time and peak CUDA memory against k (Omniglot CNN, SGD inner loop)")
        mem, slopes = bench_memory.run(True, max(3, args.repeats // 2), log, args.device,
                                       [int(k) for k in args.ks.split(",")])
        for r in mem:
            rows.append({"section": "memory_vs_k", "setting": "omniglot_cnn", "k": r["k"], "candidate": r["algorithm"],
                         "baseline": "reptile (same k)", "ratio_wall": r["ratio_wall"], "wall_ms": r["wall_ms"],
                         "peak_mib": r["peak_alloc_mib"], "repeats": r["repeats"]})
        for a in bench_memory.ALGORITHMS:
            rows.append({"section": "memory_slope", "setting": "omniglot_cnn", "candidate": a,
                         "peak_mib_per_step": slopes[f"{a}_peak_alloc_mib_per_step"],
                         "cpu_ms_per_step": slopes[f"{a}_cpu_ms_per_step"]})
        log(f"  MAML peak memory slope: {slopes['maml_peak_alloc_mib_per_step']:.2f} MiB per inner step; "
            f"Reptile {slopes['reptile_peak_alloc_mib_per_step']:.3f}")
    df = pd.DataFrame(rows)
    df.insert(0, "device", name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 48):
        print(df.drop(columns=["device"]).to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    log(f"\nwrote {args.out} ({(time.time() - t0) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
