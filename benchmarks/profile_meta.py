"""Where the time of one meta-iteration goes: ``torch.profiler`` of ``MetaTrainer.step()`` and of the
plain PyTorch loop at the paper's Omniglot 5-way settings (``bench_meta.SETTINGS["omniglot"]``:
meta-batch 5, k = 5 inner Adam steps of batch 10, 64 filters, float32), one thread by default.

Operators are grouped into categories by name (:data:`CATEGORIES`); "Python / dispatch" is the wall
time of the profiled region minus the self time of every operator (the interpreter, dynamo's guards,
torch.func's wrappers, the profiler's own cost). Times are per meta-iteration, averaged over
``--iterations`` profiled iterations after warm-up (and after compilation for compiled variants).

Run: ``python -m benchmarks.profile_meta [--variants reference,eager,default] [--threads 1] [--device cpu]``.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import defaultdict
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import bench_meta
from reptile.models import seeded_init

#: (category, operator names without the ``aten::`` prefix, name prefixes ending in ``*``, or substrings of the
#: event name starting with ``~``), first match wins
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("convolution backward", ("~aoti_torch_cpu_convolution_backward", "convolution_backward", "mkldnn_convolution_backward*", "_slow_conv2d_backward",
                              "convolution_backward_overrideable")),
    ("convolution forward", ("~aoti_torch_cpu_convolution", "convolution", "_convolution", "conv2d", "mkldnn_convolution", "_slow_conv2d_forward",
                             "convolution_overrideable", "_mkldnn_convolution*")),
    ("compiled fused kernels (BN, ReLU, CE, Adam, update)", ("~cpp_fused", "~triton_", "~kernel_cpp")),
    ("torch.compile call overhead (guards, wrappers)", ("~TorchDynamo Cache Lookup", "~Call CompiledFxGraph",
                                                         "~Torch-Compiled Region", "~AOTDispatcher", "~Pregraph bytecode",
                                                         "~CompiledFunction")),
    ("Python optimizer bookkeeping (torch.optim)", ("~Optimizer.step", "~Optimizer.zero_grad")),
    ("batch norm", ("batch_norm", "native_batch_norm", "native_batch_norm_backward", "_batch_norm_impl_index",
                    "_batch_norm_impl_index_backward", "_native_batch_norm_legit*", "_batch_norm_with_update*",
                    "batch_norm_backward", "cudnn_batch_norm*")),
    ("linear / matmul", ("~aoti_torch_cpu_mm", "~aoti_torch_cpu_addmm", "addmm", "mm", "bmm", "linear", "matmul")),
    ("loss (log-softmax, NLL)", ("log_softmax", "_log_softmax", "_log_softmax_backward_data", "nll_loss",
                                 "nll_loss_forward", "nll_loss_backward", "cross_entropy_loss", "nll_loss_nd")),
    ("ReLU", ("relu", "relu_", "threshold_backward", "clamp_min")),
    ("optimizer and parameter updates (elementwise)", ("_foreach*", "_fused_adam*", "add", "add_", "sub", "sub_",
                                                       "mul", "mul_", "div", "div_", "sqrt", "pow", "rsub",
                                                       "addcdiv_", "addcmul_", "lerp_", "maximum", "reciprocal")),
    ("copies / layout / allocation", ("copy_", "clone", "contiguous", "to", "_to_copy", "empty", "empty_like",
                                      "empty_strided", "zeros_like", "zero_", "fill_", "ones_like", "resize_",
                                      "as_strided", "permute", "reshape", "view", "detach", "expand", "t", "select",
                                      "slice", "unbind", "stack", "cat", "flatten", "_reshape_alias", "alias",
                                      "lift_fresh", "set_", "unsqueeze", "squeeze", "transpose", "_unsafe_view")),
]


def categorize(name: str) -> str:
    op = name.split("::", 1)[1] if "::" in name else name
    for cat, keys in CATEGORIES:
        for k in keys:
            if k.startswith("~"):
                if k[1:] in name:
                    return cat
                continue
            if op == k or (k.endswith("*") and op.startswith(k[:-1])) or (k.endswith("*") and name.startswith(k[:-1])):
                return cat
    return "other operators"


def profile_fn(fn: Callable[[], object], iterations: int, device: str, verbose: bool = False) -> dict[str, float]:
    """Milliseconds per call by category (see the module docstring)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        sync()
        tic = time.perf_counter()
        for _ in range(iterations):
            fn()
        sync()
        wall = time.perf_counter() - tic
    out: dict[str, float] = defaultdict(float)
    total = 0.0
    others: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        ms = e.self_cpu_time_total / 1e3 / iterations
        cat = categorize(e.key)
        if cat == "other operators":
            others[e.key] += ms
        out[cat] += ms
        total += ms
    if verbose:
        print("  other operators:", ", ".join(f"{k} {v:.2f}" for k, v in sorted(others.items(), key=lambda kv: -kv[1])[:12]))
    out["Python / dispatch (wall - operators)"] = max(wall * 1e3 / iterations - total, 0.0)
    out["total wall"] = wall * 1e3 / iterations
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_meta", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="reference,eager,default",
                   help=f"reference and/or engine paths among {','.join(bench_meta.VARIANTS)}")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config
    inductor_config.cpp.enable_kernel_profile = True  # compiled C++ kernels appear in the profile by name
    s = bench_meta.SETTINGS["omniglot"]
    tasks = bench_meta.make_tasks(s, device=args.device)
    model = seeded_init(0, s["model"]).to(args.device)
    results: dict[str, dict[str, float]] = {}
    for v in args.variants.split(","):
        if v == "reference":
            fn = bench_meta.reference_first_order(copy.deepcopy(model), tasks, "reptile", s["adam_lr"])
        else:
            fn = bench_meta.engine(copy.deepcopy(model), tasks, "reptile", s, **bench_meta.VARIANTS[v])
        tic = time.perf_counter()
        fn()
        print(f"{v}: first call {time.perf_counter() - tic:.1f} s", flush=True)
        for _ in range(2):
            fn()
        results[v] = profile_fn(fn, args.iterations, args.device, verbose=True)
    cats = [c for c, _ in CATEGORIES] + ["other operators", "Python / dispatch (wall - operators)", "total wall"]
    cats = [c for c in cats if any(r.get(c, 0.0) > 0 for r in results.values())]
    print(f"\nms per meta-iteration (Reptile, Omniglot 5-way, {args.threads} thread(s), {args.device}):")
    print("| category | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for c in cats:
        print(f"| {c} | " + " | ".join(f"{r.get(c, 0.0):.1f}" for r in results.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
