"""Fast paths of one task's meta-update, each selectable and each checked against the eager path.

:func:`make_meta_update` returns a drop-in replacement of :func:`reptile.algorithms.meta_update`
(same arguments after the first three, same results up to floating-point rounding):

* ``channels_last=True``: image minibatches ``x[k, b, C, H, W]`` and 4-d parameters are laid out
  channels-last (NHWC), which oneDNN's convolutions run faster on a CPU.
* ``compile=True``: ``torch.compile`` of the inner loop. For Reptile and FOMAML the parameters,
  gradient and optimizer moments of a task live in flat buffers (:mod:`reptile.flat`) and up to
  :data:`MAX_UNROLLED_STEPS` inner steps are one graph (:func:`make_flat_steps`): every step's
  gradient, batch norm, ReLU, loss and one fused optimizer kernel, called once per task (the
  paper's k = 5) with a handful of inputs to guard. Combinations and joint training compile one
  inner step; MAML the whole differentiable inner loop and its outer gradient. The Adam step
  counter is a 0-d tensor, so steps do not recompile; one graph is built per input shape and dtype
  (``dynamic=False``) and reused for every task and iteration.

Neither path changes the mathematics; they change the order of floating-point operations, so
results agree with the eager path to rounding (``tests/test_fast.py`` checks this in float64 and
float32). Beware when comparing Adam runs: a parameter whose exact gradient is zero (e.g. a conv
bias followed by batch norm) receives ``lr * g / (|g| + eps)`` from Adam, which turns rounding
noise of size 1e-9 into steps of size ``lr``; such parameters differ between any two
implementations, and none of the others is affected.

Measured on the 2-core CPU of this project (``docs/benchmarks.md``); on a GPU, batching the tasks
of a meta-batch with ``batching="vmap"`` is the expected win instead.

**The default** (``TrainConfig(compile="auto", channels_last="auto")``, :func:`choose_fast_path`):
compile, channels-last, for the step-by-step algorithms (Reptile, FOMAML, combinations) on models
with a convolution and at least :data:`AUTO_COMPILE_MIN_PARAMS` parameters (the paper's two
few-shot CNNs: 113K and 33K parameters), when ``torch.compile`` is usable (a C++ compiler on a CPU,
triton on a GPU); the eager path otherwise. Why: on this project's 2-core CPU the compiled
channels-last task is the fastest path for both paper CNNs (``python -m benchmarks --only default``
prints its ratio to the plain PyTorch loop at 1 and 2 threads; ``docs/benchmarks.md``), and its
compile (about 20 s cold for the Omniglot task, once per input shape, cached on disk by inductor)
is amortized within a few hundred iterations of a 100K-iteration run. MAML's whole-update compile
takes 7-8 minutes cold, so it stays eager unless asked. Small models stay eager too: for the sine
MLP compiling *is* faster per iteration but its compile pays back only after thousands of
iterations, while the sine runs of tests, demos and quick CLI checks are far shorter; pass
``compile=True`` (``--compile``) for the blog's 30,000-iteration sine run. When compilation fails
at run time the update warns (``RuntimeWarning``, through :mod:`warnings`) and continues eagerly
with the same numbers.
"""
from __future__ import annotations

import os
import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.func import grad_and_value

from .algorithms import ALGORITHMS, _check, check_weights, meta_update
from .flat import FLAT, FlatLayout
from .inner import SGD, Adam, State, make_step
from .types import Batch, LossFn, Params

MetaUpdate = Callable[..., tuple[Params, State, Tensor]]

__all__ = ["make_meta_update", "channels_last_images", "channels_last_batches", "channels_last_params",
           "contiguous_params", "FastPath", "FastMetaUpdate", "choose_fast_path", "compile_unavailable",
           "AUTO_COMPILE_MIN_PARAMS", "AUTO_COMPILE_ALGORITHMS", "make_flat_steps", "run_flat_task", "chunk_size",
           "MAX_UNROLLED_STEPS"]

#: ``compile="auto"`` compiles models with a convolution and at least this many parameters (the
#: Omniglot CNN has 113K, the Mini-ImageNet CNN 33K; the tiny CNNs of tests and demos have < 20K)
AUTO_COMPILE_MIN_PARAMS = 25_000
#: algorithms ``compile="auto"`` compiles (a 5-step Reptile task of the Omniglot CNN compiles in ~20 s cold on a 2-core CPU;
#: MAML's whole differentiable update in 7-8 minutes, so it stays eager unless asked)
AUTO_COMPILE_ALGORITHMS = ("reptile", "fomaml", "combination")
FastSetting = bool | str  # True, False or "auto"
#: keyword arguments of ``torch.compile`` that every compiled update uses unless ``compile_options``
#: overrides them (tests set ``{"backend": "eager"}`` to check the machinery without compiling C++)
COMPILE_OPTIONS: dict[str, Any] = {}
#: inductor options of the compiled inner step on a CPU: the C++ wrapper calls the graph's kernels
#: from C++ instead of a generated Python function (measured 0.70x against 0.78x the plain loop for
#: the Omniglot meta-iteration, same numbers; the first compile takes ~30% longer)
CPU_INDUCTOR_OPTIONS: dict[str, Any] = {"cpp_wrapper": True}


def compile_kwargs(device: torch.device | str | None = None, inductor_options: bool = True,
                   **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``torch.compile`` for a fast path on ``device`` (``None``: the CPU):
    ``dynamic=False``, :data:`COMPILE_OPTIONS`, then ``overrides``; with inductor (no other backend
    named) on a CPU, also :data:`CPU_INDUCTOR_OPTIONS`."""
    kw: dict[str, Any] = {"dynamic": False, **COMPILE_OPTIONS, **overrides}
    if (inductor_options and kw.get("backend", "inductor") == "inductor" and "mode" not in kw
            and torch.device(device or "cpu").type == "cpu"):
        kw["options"] = {**CPU_INDUCTOR_OPTIONS, **kw.get("options", {})}
    return kw


@dataclass(frozen=True)
class FastPath:
    """What a trainer runs: ``compile`` and ``channels_last`` resolved to booleans, and why."""

    compile: bool
    channels_last: bool
    reason: str

    def describe(self) -> str:
        name = "+".join(n for n, on in (("compile", self.compile), ("channels_last", self.channels_last)) if on)
        return f"{name or 'eager'} ({self.reason})"


def compile_unavailable(device: torch.device | str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot run here (``None``: it can): no dynamo support for this Python,
    no C++ compiler for CPU code, no triton for GPU code, or ``REPTILE_NO_COMPILE=1`` in the environment."""
    if os.environ.get("REPTILE_NO_COMPILE", "") not in ("", "0"):
        return "REPTILE_NO_COMPILE is set"
    try:
        import torch._dynamo as dynamo
        if not dynamo.is_dynamo_supported():
            return "torch.compile does not support this Python version/platform"
    except Exception as e:  # pragma: no cover - broken installs
        return f"torch._dynamo cannot be imported ({e})"
    dev = torch.device(device)
    if dev.type == "cpu":
        cxx = os.environ.get("CXX")
        if not any(shutil.which(c) for c in ([cxx] if cxx else []) + ["g++", "c++", "clang++"]):
            return "no C++ compiler found (install g++ or set CXX)"
    elif dev.type == "cuda":
        try:
            from torch.utils._triton import has_triton
            if not has_triton():
                return "triton is not installed"
        except Exception:
            return "triton is not installed"
    return None


def _has_conv(phi: Params) -> bool:
    return any(v.ndim == 4 for v in phi.values())


def choose_fast_path(compile: FastSetting, channels_last: FastSetting, algorithm: str, phi: Params,
                     batching: str = "loop") -> FastPath:
    """Resolve ``TrainConfig.compile`` / ``channels_last`` (``True``, ``False`` or ``"auto"``) for ``phi``.

    ``"auto"`` rule (measurements in ``docs/benchmarks.md``): compile when the batching is
    ``"loop"``, the algorithm is step-by-step (:data:`AUTO_COMPILE_ALGORITHMS`), ``phi`` has a
    convolution (a 4-d leaf) and at least :data:`AUTO_COMPILE_MIN_PARAMS` parameters, and
    :func:`compile_unavailable` finds nothing missing; channels-last exactly when it compiles
    such a convolutional model on a CPU (eager channels-last is slower for the Omniglot CNN and
    for second-order MAML; on a GPU it is not measured here, so ``"auto"`` leaves it off).
    ``compile=True`` where compile is unavailable warns (``RuntimeWarning``) and runs eagerly.
    """
    ref = next(iter(phi.values()))
    conv, numel = _has_conv(phi), sum(v.numel() for v in phi.values())
    missing = compile_unavailable(ref.device)
    if compile == "auto":
        if batching != "loop":
            do_compile, why = False, f"batching={batching!r}"
        elif algorithm not in AUTO_COMPILE_ALGORITHMS:
            do_compile, why = False, f"{algorithm} is compiled only when asked (compile=True)"
        elif not conv:
            do_compile, why = False, "no convolution: small models run eagerly"
        elif numel < AUTO_COMPILE_MIN_PARAMS:
            do_compile, why = False, f"{numel} parameters < {AUTO_COMPILE_MIN_PARAMS}: small models run eagerly"
        elif missing:
            do_compile, why = False, f"torch.compile unavailable: {missing}"
            warnings.warn(f"compile='auto' falls back to the eager path: {missing} (same numbers, slower)",
                          RuntimeWarning, stacklevel=3)
        else:
            do_compile, why = True, "auto: convolutional model"
    else:
        do_compile, why = bool(compile), "asked for" if compile else "compile=False"
        if do_compile and missing:
            warnings.warn(f"compile=True but {missing}; running the eager path (same numbers, slower)",
                          RuntimeWarning, stacklevel=3)
            do_compile, why = False, f"torch.compile unavailable: {missing}"
    if channels_last == "auto":
        cl = do_compile and conv and ref.device.type == "cpu"
    else:
        cl = bool(channels_last)
    return FastPath(do_compile, cl, why)


def channels_last_images(x: Tensor) -> Tensor:
    """Images ``[..., C, H, W]`` stored channels-last, so that every ``[b, C, H, W]`` slice is."""
    n = x.ndim
    perm = (*range(n - 3), n - 2, n - 1, n - 3)
    inv = (*range(n - 3), n - 1, n - 3, n - 2)
    return x.permute(perm).contiguous().permute(inv)


def channels_last_batches(batches: Batch) -> Batch:
    """Lay stacked image minibatches ``x[k, b, C, H, W]`` out so that every ``x[i]`` is channels-last.

    Other shapes are returned unchanged. The values (and the targets) are not touched.
    """
    x, y = batches
    return (channels_last_images(x) if x.ndim == 5 else x), y


def channels_last_params(params: Params) -> Params:
    """4-d leaves (convolution weights) in channels-last memory format; other leaves unchanged."""
    return {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in params.items()}


def channels_last_state(state: State) -> State:
    """An optimizer state (nested dicts of tensors) with its 4-d leaves channels-last."""
    return {k: channels_last_state(v) if isinstance(v, dict)
            else v.contiguous(memory_format=torch.channels_last) if isinstance(v, Tensor) and v.ndim == 4 else v
            for k, v in state.items()}


def contiguous_params(params: Params) -> Params:
    """Every leaf in the default (row-major) memory format."""
    return {k: v.contiguous() for k, v in params.items()}


class FastMetaUpdate:
    """The function :func:`make_meta_update` returns: ``f(phi, batches, state=None, *, weights=None)``.

    Attributes:
        compiled: whether calls still go through ``torch.compile`` (``False`` after a fallback).
        fallback_reason: why compilation was abandoned (``None`` while it works).
        first_call_seconds: wall time of the first call of every input signature (shape, dtype,
            device) -- for a compiled update, mostly compilation (the "time to first iteration").
    """

    def __init__(self, compiled: MetaUpdate | None, eager: MetaUpdate) -> None:
        self._compiled, self._eager = compiled, eager
        self.fallback_reason: str | None = None
        self.first_call_seconds: dict[tuple, float] = {}

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def seen(self, phi: Params, batches: Batch) -> bool:
        """Whether inputs like these were run before (so the call will not compile)."""
        x = batches[0]
        return (tuple(x.shape), x.dtype, x.device, next(iter(phi.values())).dtype) in self.first_call_seconds

    def __call__(self, phi: Params, batches: Batch, state: State | None = None, *,
                 weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
        x = batches[0]
        sig = (tuple(x.shape), x.dtype, x.device, next(iter(phi.values())).dtype)
        first = sig not in self.first_call_seconds
        tic = time.perf_counter()
        out = self._call(phi, batches, state, weights)
        if first:
            self.first_call_seconds[sig] = time.perf_counter() - tic
        return out

    def _call(self, phi, batches, state, weights):
        if self._compiled is None:
            return self._eager(phi, batches, state, weights=weights)
        try:
            return self._compiled(phi, batches, state, weights=weights)
        except Exception as e:  # noqa: BLE001 - anything the compiler raises; the eager rerun re-raises real errors
            out = self._eager(phi, batches, state, weights=weights)  # raises if the inputs themselves are bad
            self._compiled = None
            self.fallback_reason = _describe(e)
            warnings.warn(f"torch.compile failed ({self.fallback_reason}); continuing with the eager path, "
                          f"which gives the same numbers more slowly", RuntimeWarning, stacklevel=3)
            return out


def _describe(e: BaseException) -> str:
    """``Type: first line`` of an exception and of the compiler's error inside it (dynamo wraps it)."""
    def line(x: BaseException) -> str:
        text = next((ln.strip() for ln in str(x).splitlines() if ln.strip()), "")
        return f"{type(x).__name__}: {text[:240]}"
    inner = getattr(e, "inner_exception", None) or e.__cause__
    return line(e) + (f" <- {line(inner)}" if inner is not None and inner is not e else "")


#: the compiled Reptile / FOMAML task unrolls at most this many inner steps into one graph; a task of
#: k steps runs as k / c calls of a c-step graph, c the largest divisor of k not above it (the paper's
#: k = 5 and 8 in one call; 50 evaluation steps as 10 calls of 5). Compile time grows with the steps
#: unrolled (Omniglot CNN, cold, 2-core CPU: 16 s for 1 step, 22 s for 5, 41 s for 10), while a
#: further call per chunk costs well under a millisecond
MAX_UNROLLED_STEPS = 8


def chunk_size(k: int, limit: int | None = None) -> int:
    """The largest divisor of ``k`` not above ``limit`` (default :data:`MAX_UNROLLED_STEPS`): steps per compiled call."""
    limit = MAX_UNROLLED_STEPS if limit is None else limit
    return max(c for c in range(1, min(k, limit) + 1) if k % c == 0)


def make_flat_steps(loss_fn: LossFn, optimizer: SGD | Adam,
                    layout: FlatLayout) -> Callable[[Tensor, State, Tensor, Tensor], tuple[Tensor, Tensor, State, Tensor]]:
    """Inner steps on flat buffers (:class:`reptile.flat.FlatLayout`):
    ``steps(phi, state, x, y) -> (phi_end, phi_before_last, state, losses)`` with ``phi`` of shape
    ``[n]``, the state's moments as ``{FLAT: [n]}``, minibatches ``x[c, b, ...]``, ``y[c, b, ...]``
    and ``losses[c]``: ``phi_{i+1} = optimizer.step(phi_i, grad L_i(phi_i))`` for the c minibatches
    (paper Algorithm 1/2's inner loop).

    The c steps are unrolled in one function, so ``torch.compile`` builds one graph per shape: every
    step's gradient, batch norm, ReLU, loss and the optimizer's update (one fused kernel over the
    ``n`` entries) in one call, with one guard check.
    """
    grad_value = grad_and_value(loss_fn)

    def steps(phi: Tensor, state: State, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, State, Tensor]:
        flat, before, losses = phi, phi, []
        for i in range(x.shape[0]):
            g, loss = grad_value(layout.unflatten(flat), (x[i], y[i]))
            before = flat
            new, state = optimizer.step({FLAT: flat}, {FLAT: layout.flatten(g)}, state)
            flat = new[FLAT]
            losses.append(loss.detach())
        return flat, before, state, torch.stack(losses)

    return steps


def run_flat_task(name: str, steps: Callable, phi: Tensor, state: State, x: Tensor, y: Tensor,
                  chunk: int) -> tuple[Tensor, State, Tensor]:
    """Reptile's or FOMAML's update of one task from flat buffers, ``chunk`` steps per call of ``steps``
    (:func:`make_flat_steps`): ``u = phi_1 - phi_{k+1}`` (Reptile) or ``phi_k - phi_{k+1}`` (FOMAML,
    the last step), as :func:`reptile.algorithms.meta_update` computes them; returns ``(u, state, losses[k])``."""
    flat, losses = phi, []
    for i in range(0, x.shape[0], chunk):
        flat, before, state, l = steps(flat, state, x[i:i + chunk], y[i:i + chunk])
        losses.append(l)
    return (phi if name == "reptile" else before) - flat, state, torch.cat(losses)


def make_meta_update(name: str, loss_fn: LossFn, optimizer: SGD | Adam, *, compile: bool = False,
                     channels_last: bool = False, compile_options: dict[str, Any] | None = None,
                     device: torch.device | str | None = None) -> FastMetaUpdate:
    """A function ``f(phi, batches, state=None, *, weights=None) -> (u, state, losses)`` equal to
    ``reptile.algorithms.meta_update(name, loss_fn, phi, batches, optimizer, state, weights=weights)``.

    Args:
        name: algorithm (``"reptile"``, ``"fomaml"``, ``"maml"``, ``"combination"``, ``"joint"``).
        loss_fn: scalar loss of (params, batch); one compiled graph per ``loss_fn``.
        optimizer: the inner optimizer (its hyper-parameters are baked into the compiled graph).
        compile: use ``torch.compile`` (see the module docstring); the first call of each input
            shape compiles (tens of seconds on a small CPU). If compiling fails, the update warns
            and continues eagerly (:class:`FastMetaUpdate`).
        channels_last: lay image batches and convolution weights out channels-last.
        compile_options: extra keyword arguments of ``torch.compile`` (e.g. ``{"backend": "eager"}``).
        device: where the parameters live (``None``: the CPU); selects :data:`CPU_INDUCTOR_OPTIONS`
            for the compiled inner step on a CPU.
    Returns:
        A :class:`FastMetaUpdate`; ``u`` comes back in the default memory format.
    Raises:
        ValueError: unknown algorithm name.
    """
    _check(name, (torch.zeros(2, 1), torch.zeros(2, 1)))  # validates the name only
    opts = compile_kwargs(device, False, **(compile_options or {}))

    def layout(phi: Params, batches: Batch, state: State | None) -> tuple[Params, Batch, State | None]:
        if channels_last:
            phi, batches = channels_last_params(phi), channels_last_batches(batches)
            state = None if state is None else channels_last_state(state)
        return phi, batches, state

    def eager(phi: Params, batches: Batch, state: State | None = None, *,
              weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
        phi, batches, state = layout(phi, batches, state)
        u, state, losses = meta_update(name, loss_fn, phi, batches, optimizer, state, weights=weights)
        return (contiguous_params(u) if channels_last else u), state, losses

    if not compile:
        return FastMetaUpdate(None, eager)

    if not ALGORITHMS[name].stepwise:
        # the whole update in one graph (MAML differentiates through the inner loop)
        def whole(phi: Params, x: Tensor, y: Tensor, state: State | None) -> tuple[Params, State, Tensor]:
            return meta_update(name, loss_fn, phi, (x, y), optimizer, state)
        compiled_whole = torch.compile(whole, **opts)

        def run_whole(phi: Params, batches: Batch, state: State | None = None, *,
                      weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
            _check(name, batches)
            phi, batches, state = layout(phi, batches, state)
            state = optimizer.init(phi) if state is None else state
            u, state, losses = compiled_whole(phi, batches[0], batches[1], state)
            return (contiguous_params(u) if channels_last else u), state, losses
        return FastMetaUpdate(run_whole, eager)

    if name in ("reptile", "fomaml"):
        # the task's steps in one graph (or a few calls of one), on flat buffers (reptile.flat):
        # one compiled function per layout
        compiled_steps: dict[FlatLayout, Callable] = {}

        def run_task(phi: Params, batches: Batch, state: State | None = None, *,
                     weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
            _check(name, batches)
            lay = FlatLayout.of(phi, channels_last)
            if lay not in compiled_steps:
                compiled_steps[lay] = torch.compile(make_flat_steps(loss_fn, optimizer, lay),
                                                    **compile_kwargs(device, True, **(compile_options or {})))
            flat = lay.flatten(phi)
            fstate = optimizer.init({FLAT: flat}) if state is None else lay.flatten_state(state)
            x, y = channels_last_batches(batches) if channels_last else batches
            u, fstate, losses = run_flat_task(name, compiled_steps[lay], flat, fstate, x, y, chunk_size(len(x)))
            return lay.unflatten_copy(u), lay.unflatten_state(fstate), losses
        return FastMetaUpdate(run_task, eager)

    # combinations and joint training: one compiled inner step (gradient and optimizer update in one graph)
    step = torch.compile(make_step(loss_fn, optimizer), **compile_kwargs(device, True, **(compile_options or {})))

    def run_steps(phi: Params, batches: Batch, state: State | None = None, *,
                  weights: Sequence[float] | None = None) -> tuple[Params, State, Tensor]:
        _check(name, batches)
        phi, batches, state = layout(phi, batches, state)
        state = optimizer.init(phi) if state is None else state
        if name == "combination":
            weights = check_weights(weights, len(batches[0]))
        u, state, losses = meta_update(name, loss_fn, phi, batches, optimizer, state, weights=weights, step=step)
        return (contiguous_params(u) if channels_last else u), state, losses
    return FastMetaUpdate(run_steps, eager)
