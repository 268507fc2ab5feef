"""One meta-iteration of Reptile, FOMAML and MAML against a straightforward PyTorch loop.

Settings (REFERENCE.md section 4, Tables 3 and 4; synthetic images, so data loading is excluded
from every candidate alike):

* ``omniglot``: 28x28x1 inputs, the 64-filter Omniglot CNN, 5-way, meta-batch 5, k = 5 inner
  minibatches of 10, Adam(lr 0.001, beta1 = 0).
* ``miniimagenet``: 84x84x3 inputs, the 32-filter Mini-ImageNet CNN, 5-way, meta-batch 5, k = 8
  inner minibatches of 10, Adam(lr 0.001, beta1 = 0).

MAML (second order) uses an SGD inner loop (lr 0.01), as the MAML paper does; Adam's
``g / sqrt(v)`` has an infinite derivative wherever a gradient entry is exactly zero (a dead ReLU
feature, a conv bias before batch norm), which makes second-order MAML through Adam NaN in any
implementation. With k minibatches MAML and FOMAML take k - 1 inner steps and use the k-th
minibatch for the outer loss (the engine's convention); Reptile takes k steps.

The baseline, written here as anyone would write it first:

* Reptile / FOMAML: per task ``copy.deepcopy`` of the ``nn.Module``, a fresh
  ``torch.optim.Adam(betas=(0, 0.999))``, ``loss.backward()``, ``opt.step()``; the update
  ``phi - phi~`` (Reptile) or the last step's ``phi_k - phi_{k+1}`` (FOMAML) summed over tasks, then
  the outer interpolation.
* MAML: fast weights as a list of tensors, ``torch.func.functional_call``, inner steps with
  ``torch.autograd.grad(create_graph=True)``, the outer loss's ``torch.autograd.grad`` to the
  initial parameters.

Candidates are ``reptile.train.MetaTrainer.step()`` (one whole meta-iteration: the tasks' updates
and the outer step) with the engine's paths: ``eager`` (the default, pure torch.func), and the
fast paths of :mod:`reptile.fast` (``channels_last``, ``compile``, both) and ``batching="vmap"``.
All use a fresh inner optimizer state per task, like the baseline (the cost is the same as with
the paper's persistent Adam moments).
"""
from __future__ import annotations

import copy
import statistics
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from benchmarks.common import compare, first_calls
from reptile.losses import make_loss, params_of
from reptile.models import MiniImageNetCNN, OmniglotCNN, seeded_init
from reptile.train import MetaTrainer, TrainConfig

SETTINGS = {
    "omniglot": dict(model=lambda: OmniglotCNN(n_way=5, filters=64), shape=(1, 28, 28), meta_batch=5, k=5,
                     batch=10, adam_lr=1e-3, sgd_lr=0.01),
    "miniimagenet": dict(model=lambda: MiniImageNetCNN(n_way=5, filters=32), shape=(3, 84, 84), meta_batch=5, k=8,
                         batch=10, adam_lr=1e-3, sgd_lr=0.01),
}
VARIANTS = {  # name -> TrainConfig overrides
    "default": {},  # compile="auto", channels_last="auto": what a user gets without flags
    "eager": {"compile": False, "channels_last": False},
    "channels_last": {"compile": False, "channels_last": True},
    "compile": {"compile": True, "channels_last": False},
    "compile+channels_last": {"compile": True, "channels_last": True},
    "vmap": {"batching": "vmap"},
}
OUTER_EPS = 1.0


def make_tasks(setting: dict, seed: int = 0, device: str = "cpu",
               meta_batch: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``meta_batch`` tasks (default the setting's) of k synthetic minibatches, drawn on the CPU then moved."""
    g = torch.Generator().manual_seed(seed)
    k, b = setting["k"], setting["batch"]
    return [(torch.rand(k, b, *setting["shape"], generator=g).to(device),
             torch.randint(0, 5, (k, b), generator=g).to(device))
            for _ in range(meta_batch or setting["meta_batch"])]


def reference_first_order(model: nn.Module, tasks: list, algorithm: str, lr: float) -> Callable[[], None]:
    """The straightforward loop (Reptile or FOMAML), including the outer interpolation of ``model``."""
    def iteration() -> None:
        total = [torch.zeros_like(p) for p in model.parameters()]
        for x, y in tasks:
            m = copy.deepcopy(model)
            opt = torch.optim.Adam(m.parameters(), lr=lr, betas=(0.0, 0.999))
            k = x.shape[0]
            for i in range(k):
                if algorithm == "fomaml" and i == k - 1:
                    before = [p.detach().clone() for p in m.parameters()]
                opt.zero_grad()
                loss = F.cross_entropy(m(x[i]), y[i])
                loss.backward()
                opt.step()
            start = list(model.parameters()) if algorithm == "reptile" else before
            with torch.no_grad():
                for t, s, p in zip(total, start, m.parameters()):
                    t += s - p
        with torch.no_grad():
            for p, t in zip(model.parameters(), total):
                p -= OUTER_EPS * t / len(tasks)
    return iteration


def reference_maml(model: nn.Module, tasks: list, lr: float) -> Callable[[], None]:
    """Second-order MAML the straightforward way: unrolled ``autograd.grad(create_graph=True)``."""
    names = [n for n, _ in model.named_parameters()]

    def iteration() -> None:
        total = [torch.zeros_like(p) for p in model.parameters()]
        for x, y in tasks:
            phi = [p.detach().clone().requires_grad_() for p in model.parameters()]
            fast = phi
            for i in range(x.shape[0] - 1):
                loss = F.cross_entropy(functional_call(model, dict(zip(names, fast)), (x[i],)), y[i])
                grads = torch.autograd.grad(loss, fast, create_graph=True)
                fast = [p - lr * g for p, g in zip(fast, grads)]
            outer = F.cross_entropy(functional_call(model, dict(zip(names, fast)), (x[-1],)), y[-1])
            for t, g in zip(total, torch.autograd.grad(outer, phi)):
                t += lr * g
        with torch.no_grad():
            for p, t in zip(model.parameters(), total):
                p -= OUTER_EPS * t / len(tasks)
    return iteration


def make_trainer(model: nn.Module, tasks: list, algorithm: str, setting: dict, trainer_kwargs: dict | None = None,
                 **overrides) -> MetaTrainer:
    """A ``MetaTrainer`` on the same tasks (the sampler hands them out in turn); fresh inner state per
    task like the baseline unless ``reset_inner_state=False`` is among the overrides."""
    adam = algorithm != "maml"
    overrides = {"reset_inner_state": True, **overrides}
    cfg = TrainConfig(algorithm=algorithm, inner_steps=setting["k"], inner_batch=setting["batch"],
                      inner_optimizer="adam" if adam else "sgd",
                      inner_lr=setting["adam_lr"] if adam else setting["sgd_lr"],
                      outer_lr=OUTER_EPS, anneal=False, meta_batch=len(tasks), iterations=10**9,
                      checkpoint_every=10**9, log_every=10**9, **overrides)
    counter = iter(range(10**9))

    def sampler(rng: np.random.Generator):
        return tasks[next(counter) % len(tasks)]

    return MetaTrainer(make_loss(model, "cross_entropy"), params_of(model), sampler, cfg, **(trainer_kwargs or {}))


def engine(model: nn.Module, tasks: list, algorithm: str, setting: dict, **overrides) -> Callable[[], None]:
    """``MetaTrainer.step()``: one whole meta-iteration of the engine."""
    trainer = make_trainer(model, tasks, algorithm, setting, **overrides)
    return lambda: trainer.step()


def run(settings: list[str], algorithms: list[str], variants: list[str], repeats: dict[str, int],
        log: Callable[[str], None] = print, device: str = "cpu") -> list[dict]:
    rows = []
    for sname in settings:
        s = SETTINGS[sname]
        tasks = make_tasks(s, device=device)
        for alg in algorithms:
            model = seeded_init(0, s["model"]).to(device)
            ref_model = copy.deepcopy(model)
            cands: dict[str, Callable[[], None]] = {
                "reference": reference_maml(ref_model, tasks, s["sgd_lr"]) if alg == "maml"
                else reference_first_order(ref_model, tasks, alg, s["adam_lr"])}
            for v in variants:
                cands[v] = engine(copy.deepcopy(model), tasks, alg, s, **VARIANTS[v])
            # first calls (compilation) timed separately, then one more warm-up round inside compare
            first = first_calls(cands, log, f"{sname} {alg} ")
            res = compare(_synced(cands, device), "reference", repeats[sname], warmup=1)
            for n, t in res.items():
                rows.append({"suite": "meta_iteration", "device": device, "setting": sname, "algorithm": alg, "candidate": n,
                             "baseline": "reference", "ratio_cpu": t.ratio_cpu, "ratio_wall": t.ratio_wall,
                             "ratio_cpu_iqr_half": t.spread(), "cpu_ms": t.cpu_s * 1e3, "wall_ms": t.wall_s * 1e3,
                             "first_call_s": first[n], "repeats": repeats[sname]})
                log(f"  {sname:<12} {alg:<7} {n:<22} {t.ratio_cpu:5.2f}x cpu  {t.ratio_wall:5.2f}x wall  "
                    f"({t.cpu_s * 1e3:.0f} ms cpu)")
    return rows


def _synced(cands: dict[str, Callable[[], None]], device: str) -> dict[str, Callable[[], None]]:
    """On a GPU, each candidate waits for its kernels, so that the timer sees them."""
    if not device.startswith("cuda"):
        return cands
    def wrap(f: Callable[[], None]) -> Callable[[], None]:
        def g() -> None:
            f()
            torch.cuda.synchronize()
        return g
    return {n: wrap(f) for n, f in cands.items()}


def _with_threads(fn: Callable[[], None], n: int) -> Callable[[], None]:
    def call() -> None:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            fn()
        finally:
            torch.set_num_threads(before)
    return call


def convolutions_alone(model: nn.Module, setting: dict) -> Callable[[], None]:
    """The floor of any implementation on this CPU: only the convolutions of one meta-iteration.

    oneDNN's forward and backward (input gradient where a layer has a predecessor, weight and bias
    gradients) of every ``Conv2d`` of ``model`` at the shapes the inner steps meet, channels-last
    (its faster layout here), ``meta_batch x k`` times on fixed random tensors (so with warm caches:
    a lower bound). Nothing else of the meta-iteration (batch norm, ReLU, loss, optimizer, Python)
    is in it.
    """
    shapes: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.append((mod, tuple(inp[0].shape))))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(setting["batch"], *setting["shape"]))
    for h in hooks:
        h.remove()
    cl = torch.channels_last
    layers = []
    for i, (conv, shape) in enumerate(shapes):
        x = torch.randn(shape).contiguous(memory_format=cl)
        w = conv.weight.detach().clone().contiguous(memory_format=cl)
        b = conv.bias.detach().clone() if conv.bias is not None else None
        go = torch.randn_like(conv._conv_forward(x, w, b))
        layers.append((conv, x, w, b, go, [i > 0, True, b is not None]))
    steps = setting["meta_batch"] * setting["k"]

    def run() -> None:
        for _ in range(steps):
            for conv, x, w, b, go, mask in layers:
                conv._conv_forward(x, w, b)
                torch.ops.aten.convolution_backward(go, x, w, None if b is None else [b.numel()], conv.stride,
                                                    conv.padding, conv.dilation, False, [0, 0], conv.groups, mask)
    return run


def run_default(repeats: int, threads: tuple[int, ...] = (1, 2), log: Callable[[str], None] = print,
                setting_name: str = "omniglot", algorithm: str = "reptile") -> list[dict]:
    """What a user gets without flags (``TrainConfig()``'s ``compile``/``channels_last`` = "auto")
    against the plain loop, at each thread count, all in one interleaved comparison.

    Candidates per thread count n: ``reference`` (the plain loop with n intra-op threads),
    ``default`` (fresh Adam state per task like the reference; with n > 1 the independent tasks run
    on n threads) and ``default, persistent Adam`` (the paper's setting: moments carried from task to
    task, so tasks run one after another). A ratio is the median over rounds of the paired wall-time
    ratio to the same round's reference at the same thread count; for one thread also CPU time.
    """
    s = SETTINGS[setting_name]
    tasks = make_tasks(s)
    model = seeded_init(0, s["model"])
    cands: dict[str, Callable[[], None]] = {}
    trainers = {}
    for n in threads:
        ref = reference_first_order(copy.deepcopy(model), tasks, algorithm, s["adam_lr"])
        cands[f"reference, {n} thread(s)"] = _with_threads(ref, n)
        for name, over in (("default", {}), ("default, persistent Adam", {"reset_inner_state": False})):
            trainers[(name, n)] = t = make_trainer(copy.deepcopy(model), tasks, algorithm, s, **over)
            cands[f"{name}, {n} thread(s)"] = _with_threads(lambda t=t: t.step(), n)
    cands[f"convolutions alone, {threads[0]} thread(s)"] = _with_threads(convolutions_alone(model, s), threads[0])
    first = first_calls(cands, log)  # compilation (once per shape: the later trainers reuse it)
    path = trainers[("default", threads[0])].fast_path.describe()
    res = compare(cands, f"reference, {threads[0]} thread(s)", repeats, warmup=1)
    rows = []
    for n in threads:
        base = res[f"reference, {n} thread(s)"]
        for name in ("reference", "default", "default, persistent Adam", "convolutions alone"):
            if f"{name}, {n} thread(s)" not in res:
                continue
            t = res[f"{name}, {n} thread(s)"]
            wall = statistics.median(c / b for c, b in zip(t.wall, base.wall))
            cpu = statistics.median(c / b for c, b in zip(t.cpu, base.cpu)) if n == 1 else float("nan")
            rows.append({"suite": "default_path", "setting": setting_name, "algorithm": algorithm, "threads": n,
                         "candidate": name, "baseline": f"reference, {n} thread(s)", "ratio_wall": wall,
                         "ratio_cpu": cpu, "wall_ms": t.wall_s * 1e3, "first_call_s": first[f"{name}, {n} thread(s)"],
                         "repeats": repeats, "path": path})
            if name != "reference":
                log(f"  {setting_name} {algorithm} {name:<26} {n} thread(s): {wall:5.2f}x the plain loop (wall)"
                    + (f", {cpu:5.2f}x (CPU)" if n == 1 else "") + f"  [{t.wall_s * 1e3:.0f} ms vs {base.wall_s * 1e3:.0f} ms]")
    log(f"  default path: {path}")
    return rows


# -- both cores: the meta-batch's tasks split over 2 processes (reptile.distributed) ------------------
def _worker(rank: int, world: int, port: int, setting_name: str, algorithm: str, overrides: dict, conn) -> None:
    import torch.distributed as dist

    from reptile.distributed import all_reduce_sum, task_slice
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        s = SETTINGS[setting_name]
        tasks = make_tasks(s)
        model = seeded_init(0, s["model"])
        trainer = make_trainer(model, tasks, algorithm, s, {"task_slice": task_slice(len(tasks), rank, world),
                                                            "reduce": all_reduce_sum}, **overrides)
        conn.send("ready")
        while conn.recv() == "step":
            trainer.step()
            conn.send("done")
    except BaseException as e:  # report, then let the parent kill the group
        conn.send(f"error: {e!r}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class DataParallel:
    """``world`` worker processes, one intra-op thread each, that take one meta-iteration of their share
    of the tasks (gloo all-reduce) every time :meth:`__call__` is called; wall time is measured here."""

    def __init__(self, setting_name: str, algorithm: str, overrides: dict, world: int = 2, timeout: float = 1800):
        import multiprocessing as mp
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ctx = mp.get_context("spawn")
        self.timeout, self.conns, self.procs = timeout, [], []
        for rank in range(world):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(rank, world, port, setting_name, algorithm, overrides, child),
                            daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        self._expect("ready")

    def _expect(self, what: str) -> None:
        for c in self.conns:
            if not c.poll(self.timeout):
                self.close()
                raise RuntimeError(f"a data-parallel worker did not answer within {self.timeout} s")
            msg = c.recv()
            if msg != what:
                self.close()
                raise RuntimeError(f"data-parallel worker failed: {msg}")

    def __call__(self) -> None:
        for c in self.conns:
            c.send("step")
        self._expect("done")

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send("stop")
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


def run_parallel(settings: list[str], algorithms: list[str], variants: list[str], repeats: int, world: int = 2,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Wall time of a meta-iteration split over ``world`` single-threaded processes, against the
    reference loop with ``world`` intra-op threads in this process (both use all the cores)."""
    rows = []
    for sname in settings:
        s = SETTINGS[sname]
        tasks = make_tasks(s)
        for alg in algorithms:
            model = seeded_init(0, s["model"])
            ref = reference_maml(model, tasks, s["sgd_lr"]) if alg == "maml" else \
                reference_first_order(model, tasks, alg, s["adam_lr"])
            threads = torch.get_num_threads()

            def reference() -> None:
                torch.set_num_threads(world)
                try:
                    ref()
                finally:
                    torch.set_num_threads(threads)
            workers = {}
            try:
                cands: dict[str, Callable[[], None]] = {"reference": reference}
                for v in variants:
                    workers[v] = DataParallel(sname, alg, VARIANTS[v], world)
                    cands[f"{world} processes, {v}"] = workers[v]
                first = first_calls(cands, log, f"{sname} {alg} ")
                res = compare(cands, "reference", repeats, warmup=1)
            finally:
                for w in workers.values():
                    w.close()
            for n, t in res.items():
                rows.append({"suite": "meta_iteration_2_cores", "setting": sname, "algorithm": alg, "candidate": n,
                             "baseline": f"reference, {world} threads", "ratio_wall": t.ratio_wall,
                             "wall_ms": t.wall_s * 1e3, "first_call_s": first[n], "repeats": repeats})
                log(f"  {sname:<12} {alg:<7} {n:<36} {t.ratio_wall:5.2f}x wall  ({t.wall_s * 1e3:.0f} ms)")
    return rows
