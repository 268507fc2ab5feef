"""The ``Problem`` protocol of ``reptile verify``, the embedded problems, and user problems.

A :class:`Problem` is everything the claims of the paper's section 5 need: a scalar loss
``loss_fn(params, batch)`` (a ``LossFn``), a point ``phi`` where everything is evaluated, and a
sampler of k minibatches of one task. ``reptile verify --problem package.module:factory`` runs
every claim that applies on the ``Problem`` that ``factory(**kwargs)`` returns
(:func:`load_problem`, :func:`check_problem`, :func:`to_device`).

Writing a factory (the whole protocol)::

    from analysis.problems import Problem
    from reptile.losses import make_loss, params_of

    def factory(seed: int = 0, width: int = 16) -> Problem:
        model = MyNet(width).double()           # any nn.Module that torch.func can transform
        def sampler(k: int, b: int):            # k minibatches of size b of ONE task
            def sample_batches(rng):            # rng: numpy.random.Generator, the only randomness
                task = draw_task(rng)
                return x, y                     # x[k, b, ...], y[k, b, ...] tensors
            return sample_batches
        return Problem("my net", model, make_loss(model, "mse"), params_of(model), sampler, None)

Requirements, checked by :func:`check_problem` with a message that names the fix:

* ``loss_fn(phi, (x[i], y[i]))`` is a finite scalar and composes with ``torch.func`` (``grad``,
  ``jvp``, ``vmap``): batch norm must use batch statistics (``track_running_stats=False``) or be
  replaced by group norm -- the transforms need a functional layer, and running statistics are
  buffers updated in place;
* the k minibatches of a sample are *exchangeable* (every order has the same joint law): draw
  them i.i.d. given the task, or as a random partition. The exchangeability claim tests this;
* all randomness comes from the ``rng`` argument (results then repeat exactly);
* ``phi`` is a ``dict`` of floating tensors (``Params``); float64 recommended (the default
  ``--dtype``), ``--dtype float32`` is supported.

Optional: ``model`` (``nn.Module`` or ``None``: used for the batch-norm check and moved to
``--device``/``--dtype``), ``distribution`` (anything), ``batch_size`` (the b of the claims,
default 10), ``info`` (``{"closed_form": "least_squares", ...}`` enables the closed-form claims;
anything else is carried along). A factory may take ``device`` and ``dtype`` keyword arguments;
they are then passed the ``--device``/``--dtype`` values.

Embedded problems:

* :func:`sine_problem` -- the sine-wave MLP 1-64-64-1 tanh (Reptile paper Figure 1, OpenAI
  blog), float64, tasks ``a sin(x + b)`` with a ~ U[0.1, 5], b ~ U[0, 2 pi] on the 50-point grid
  of [-5, 5]; minibatches drawn with the "replacement" schedule (each batch b distinct grid points,
  independently of the other batches), so the k minibatches of a task are exchangeable.
* :func:`least_squares_problem` -- a linear model ``y = x . w`` on Gaussian least-squares tasks
  (:class:`reptile.tasks.LeastSquaresTaskDistribution`), float64; Hessians are constant, so the
  expansions and expectations have closed forms (:mod:`analysis.closed_forms`).
"""
from __future__ import annotations

import importlib
import inspect
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from reptile.losses import make_loss
from reptile.models import MLP, LinearModel
from reptile.tasks import LeastSquaresTaskDistribution, SineTaskDistribution
from reptile.tasks.schedules import minibatch_indices
from reptile.types import Batch, LossFn, Params
from reptile.types import TaskSampler as Sampler  # the one task-sampler type (reptile.types)

from .draws import ManyDraws


class ProblemError(ValueError):
    """A ``--problem`` that cannot be used: the message names the problem and the fix."""


@dataclass(frozen=True)
class Problem:
    """A loss, a point phi and a task distribution: what every claim of ``reptile verify`` needs.

    Attributes:
        name: short label used in reports.
        model: the ``nn.Module`` behind ``loss_fn``, or ``None`` (then no batch-norm check and
            the loss must handle ``--device``/``--dtype`` itself, e.g. through factory arguments).
        loss_fn: ``LossFn``: ``loss_fn(params, (x[b, ...], y[b, ...])) -> scalar tensor``.
        phi: the point where everything is evaluated (``Params``, float64 by default).
        sampler: ``sampler(k, b)`` returns ``sample_batches(rng) -> (x[k, b, ...], y[k, b, ...])``:
            one task drawn from the distribution with ``rng`` (a ``numpy.random.Generator``),
            then k exchangeable minibatches of size b.
        distribution: the task distribution object (or ``None``).
        info: problem-specific constants (least squares: ``input_scales``; ``closed_form``:
            ``"least_squares"`` enables the closed-form claims).
        batch_size: the minibatch size b the claims use.
    """

    name: str
    model: nn.Module | None
    loss_fn: LossFn
    phi: Params
    sampler: Callable[[int, int], Sampler]
    distribution: object = None
    info: dict = field(default_factory=dict)
    batch_size: int = 10

    @property
    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.phi.values()))

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.phi.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self.phi.values())).device


def init_params(model: nn.Module, seed: int, dtype: torch.dtype = torch.float64) -> Params:
    """PyTorch's default ``nn.Linear`` initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
    weights and biases, drawn from ``torch.Generator().manual_seed(seed)`` (the global RNG is
    untouched). Only ``nn.Linear`` layers are supported (the MLP and the linear model).

    Not :func:`reptile.models.seeded_init` (issue 16 asks whether one can replace the other): that
    builds the model under a seeded global generator, so torch draws the same distributions in
    float32 and in another order; the parameters differ (by up to 1.8 for the sine MLP's first
    layer), and every number of ``reptile verify`` is measured at this phi."""
    gen = torch.Generator().manual_seed(int(seed))
    out: Params = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            bound = 1.0 / math.sqrt(mod.in_features)
            prefix = f"{mod_name}." if mod_name else ""
            out[prefix + "weight"] = (torch.rand(mod.weight.shape, generator=gen, dtype=dtype) * 2 - 1) * bound
            if mod.bias is not None:
                out[prefix + "bias"] = (torch.rand(mod.bias.shape, generator=gen, dtype=dtype) * 2 - 1) * bound
    names = [n for n, _ in model.named_parameters()]
    if sorted(names) != sorted(out):
        raise ValueError(f"init_params supports models made of nn.Linear only; {type(model).__name__} has {names}")
    return {n: out[n] for n in names}


def sine_problem(seed: int = 0, sizes: tuple[int, ...] = (1, 64, 64, 1), activation: str = "tanh") -> Problem:
    """The sine-wave MLP (default 1-64-64-1 tanh, float64) at a seeded initialization."""
    model = MLP(sizes, activation).double()
    dist = SineTaskDistribution(variant="reptile", dtype=torch.float64)

    def sampler(k: int, b: int) -> Sampler:
        return lambda rng: dist.sample(rng).minibatches(k, b, rng, "replacement")

    return Problem(f"sine MLP {'-'.join(map(str, sizes))} {activation}", model, make_loss(model, "mse"),
                   init_params(model, seed), sampler, dist, batch_size=10)


def least_squares_problem(seed: int = 0, dim: int = 10, n_points: int = 20, noise: float = 0.1,
                          scale: float = 0.5, input_scales: tuple[float, float] = (0.5, 1.5)) -> Problem:
    """Linear least squares in ``dim`` weights, tasks with ``n_points`` examples (float64).

    Tasks come from :class:`reptile.tasks.LeastSquaresTaskDistribution` (inputs ``a ~ N(0, I)``,
    targets ``a . w_tau + noise``, ``w_tau ~ N(1, I)``); the sampler then multiplies input column
    c by ``D_c``, geometrically spaced over ``input_scales`` (the model sees ``x = D a``). With
    isotropic inputs (``input_scales=(1, 1)``) AvgGrad and AvgGradInner are parallel (both
    multiples of ``phi - 1``), so no regression can separate their coefficients; the spread of
    scales makes them independent directions. Closed forms: :mod:`analysis.closed_forms`.
    ``phi`` is ``scale`` times a standard normal vector from ``numpy.random.default_rng(seed)``.
    """
    model = LinearModel(dim).double()
    dist = LeastSquaresTaskDistribution(dim=dim, n_points=n_points, noise=noise, dtype=torch.float64)
    w = scale * np.random.default_rng(seed).standard_normal((1, dim))
    phi = {"linear.weight": torch.as_tensor(w, dtype=torch.float64)}
    d = torch.as_tensor(np.geomspace(input_scales[0], input_scales[1], dim), dtype=torch.float64)

    d_np = d.numpy()

    def sampler(k: int, b: int) -> Sampler:
        # = dist.sample(rng).minibatches(k, b, rng, "replacement") with x * d (the same draws from rng,
        # bit for bit: tests/test_verify_speed.py), indexed in numpy: ~1.5x faster per draw, and the
        # coefficient claims draw ~80,000 tasks
        def sample_batches(rng: np.random.Generator) -> Batch:
            _, a, t = dist.sample_arrays(rng)
            idx = minibatch_indices(len(a), k, b, "replacement", rng)
            return torch.as_tensor(a[idx] * d_np, dtype=dist.dtype), torch.as_tensor(t[idx][..., None], dtype=dist.dtype)
        # many draws at once, the same numbers (analysis.draws; used by analysis.expectations.sample_many)
        sample_batches.many = ManyDraws(dist.sample_arrays, d_np, k, b, dist.dtype, sample_batches)  # type: ignore[attr-defined]
        return sample_batches

    return Problem(f"least squares d={dim} m={n_points}", model, make_loss(model, "mse"), phi, sampler, dist,
                   {"input_scales": d, "closed_form": "least_squares"}, batch_size=5)


# -- user problems: ``reptile verify --problem package.module:factory`` -------------------------
def parse_problem_arg(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``; the value is read as JSON when it parses (numbers,
    ``true``, lists, quoted strings), else kept as the plain string."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise ProblemError(f"--problem-arg {text!r} is not key=value (e.g. --problem-arg width=16)")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def read_problem_args(path: str | Path) -> dict[str, Any]:
    """Keyword arguments for a factory from a JSON (``.json``) or TOML (``.toml``) file: one table/object."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ProblemError(f"cannot read the problem arguments file {str(path)!r}: {e.strerror or e}") from e
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as e:
        raise ProblemError(f"{str(path)!r} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'}: {e}") from e
    if not isinstance(data, dict):
        raise ProblemError(f"{str(path)!r} must hold one object/table of keyword arguments, got {type(data).__name__}")
    return data


def load_factory(spec: str) -> Callable[..., Problem]:
    """Import ``package.module:factory`` (the module must be importable: on ``sys.path`` or in the
    current folder) and return the factory. Raises :class:`ProblemError` naming what is wrong."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ProblemError(f"--problem {spec!r} must look like package.module:factory "
                           "(a module path, a colon, a function returning analysis.problems.Problem)")
    mod_name, attr = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name and mod_name.startswith(e.name):
            raise ProblemError(f"--problem {spec!r}: module {mod_name!r} cannot be imported ({e}); run from the "
                               "folder that holds it or add that folder to PYTHONPATH") from e
        raise ProblemError(f"--problem {spec!r}: importing {mod_name!r} failed: {type(e).__name__}: {e}") from e
    except Exception as e:  # an error inside the user's module: show it, it is theirs to fix
        raise ProblemError(f"--problem {spec!r}: importing {mod_name!r} raised {type(e).__name__}: {e}") from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)))
            raise ProblemError(f"--problem {spec!r}: module {mod_name!r} has no {attr!r}; callables there: "
                               f"{', '.join(names[:12]) or 'none'}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ProblemError(f"--problem {spec!r}: {attr!r} is a {type(obj).__name__}, not a function returning a Problem")
    return obj


def load_problem(spec: str, kwargs: Mapping[str, Any] | None = None, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64) -> Problem:
    """Build, check and move the user problem ``spec`` = ``package.module:factory``.

    ``factory(**kwargs)`` is called (with ``device=``/``dtype=`` added when its signature takes
    them); the result must be a :class:`Problem` (or have its attributes ``name``, ``loss_fn``,
    ``phi``, ``sampler``). It is then validated (:func:`check_problem`) and moved to ``device``
    and ``dtype`` (:func:`to_device`).

    Raises:
        ProblemError: the factory cannot be imported, rejects the arguments, raises, returns the
            wrong thing, or the problem fails :func:`check_problem`.
    """
    factory = load_factory(spec)
    kwargs = dict(kwargs or {})
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in (("device", str(torch.device(device))), ("dtype", dtype)):
        if key in params and key not in kwargs:
            kwargs[key] = value
    try:
        prob = factory(**kwargs)
    except TypeError as e:
        raise ProblemError(f"--problem {spec!r}: calling it with {kwargs} failed: {e} (pass arguments with "
                           "--problem-arg key=value or --problem-args FILE)") from e
    except Exception as e:
        raise ProblemError(f"--problem {spec!r}: the factory raised {type(e).__name__}: {e}") from e
    prob = as_problem(prob, spec)
    check_problem(prob, spec)
    return to_device(prob, device, dtype)


def as_problem(obj: Any, spec: str = "problem") -> Problem:
    """``obj`` as a :class:`Problem` (duck-typed objects with the same attributes are copied)."""
    if isinstance(obj, Problem):
        return obj
    missing = [a for a in ("name", "loss_fn", "phi", "sampler") if not hasattr(obj, a)]
    if missing:
        raise ProblemError(f"--problem {spec!r} returned a {type(obj).__name__}, not an analysis.problems.Problem "
                           f"(missing {', '.join(missing)}); return Problem(name, model, loss_fn, phi, sampler)")
    return Problem(str(obj.name), getattr(obj, "model", None), obj.loss_fn, obj.phi, obj.sampler,
                   getattr(obj, "distribution", None), dict(getattr(obj, "info", {}) or {}),
                   int(getattr(obj, "batch_size", 10)))


BATCH_NORM_HELP = ("torch.func transforms (grad, jvp, vmap) need a functional batch norm: build it with "
                   "track_running_stats=False (batch statistics, as the Reptile paper's networks) or use "
                   "nn.GroupNorm; running statistics are buffers that the layer updates in place")


def check_problem(prob: Problem, spec: str = "problem") -> None:
    """Validate a problem with one tiny sample (k = 2 minibatches): types, shapes, a finite scalar
    loss, a gradient through ``torch.func``, batch norm with batch statistics.

    Raises:
        ProblemError: with what is wrong and how to fix it.
    """
    where = f"--problem {spec!r} ({prob.name})" if spec != "problem" else f"problem {prob.name!r}"
    if not isinstance(prob.phi, dict) or not prob.phi or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in prob.phi.items()):
        raise ProblemError(f"{where}: phi must be a non-empty dict of parameter name -> tensor (reptile.params_of(model))")
    bad = [k for k, v in prob.phi.items() if not v.is_floating_point()]
    if bad:
        raise ProblemError(f"{where}: phi entries {bad[:3]} are not floating-point tensors")
    if not callable(prob.loss_fn) or not callable(prob.sampler):
        raise ProblemError(f"{where}: loss_fn and sampler must be callables")
    if not isinstance(prob.batch_size, int) or prob.batch_size < 1:
        raise ProblemError(f"{where}: batch_size must be a positive int, got {prob.batch_size!r}")
    if prob.model is not None:
        for name, mod in prob.model.named_modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
                raise ProblemError(f"{where}: layer {name or type(mod).__name__!r} is batch norm with running "
                                   f"statistics; {BATCH_NORM_HELP}")
    try:
        draw = prob.sampler(2, prob.batch_size)
        batches = draw(np.random.default_rng(0))
    except Exception as e:
        raise ProblemError(f"{where}: sampler(2, {prob.batch_size})(numpy.random.default_rng(0)) raised "
                           f"{type(e).__name__}: {e}") from e
    if (not isinstance(batches, (tuple, list)) or len(batches) != 2
            or not all(isinstance(t, torch.Tensor) for t in batches)):
        raise ProblemError(f"{where}: sampler(k, b)(rng) must return (x[k, b, ...], y[k, b, ...]) tensors, got "
                           f"{type(batches).__name__}")
    x, y = batches
    if x.ndim < 2 or y.ndim < 2 or x.shape[0] != 2 or y.shape[0] != 2 or x.shape[1] != y.shape[1]:
        raise ProblemError(f"{where}: sampler(2, {prob.batch_size}) returned x{tuple(x.shape)}, y{tuple(y.shape)}; "
                           f"expected a leading dimension k = 2 and the same minibatch size in both")
    try:
        loss = prob.loss_fn(prob.phi, (x[0], y[0]))
    except Exception as e:
        _explain_failure(where, "loss_fn(phi, minibatch)", e)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not torch.isfinite(loss).all():
        raise ProblemError(f"{where}: loss_fn(phi, minibatch) must return a finite scalar tensor, got {loss!r}")
    try:
        torch.func.grad(lambda p: prob.loss_fn(p, (x[0], y[0])).reshape(()))(prob.phi)
    except Exception as e:
        _explain_failure(where, "torch.func.grad of loss_fn", e)


def _explain_failure(where: str, what: str, e: Exception) -> None:
    msg = str(e)
    if "running_mean" in msg or "running_var" in msg or "batch_norm" in msg.lower():
        raise ProblemError(f"{where}: {what} failed ({type(e).__name__}: {msg.splitlines()[0][:200]}); "
                           f"{BATCH_NORM_HELP}") from e
    raise ProblemError(f"{where}: {what} raised {type(e).__name__}: {msg.splitlines()[0][:300] if msg else ''}") from e


def to_device(prob: Problem, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> Problem:
    """The same problem with ``phi`` (and ``model``, and the sampled inputs) on ``device`` in ``dtype``.

    Floating tensors the sampler returns are cast to ``dtype``; integer targets (class labels) keep
    theirs. The model is moved in place (its ``loss_fn`` closes over it).
    """
    device = torch.device(device)
    if prob.device == device and prob.dtype == dtype:
        return prob

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)

    if prob.model is not None:
        prob.model.to(device=device, dtype=dtype)
    inner = prob.sampler

    def sampler(k: int, b: int) -> Sampler:
        draw = inner(k, b)
        return lambda rng: tuple(move(t) for t in draw(rng))

    return replace(prob, phi={n: move(p) for n, p in prob.phi.items()}, sampler=sampler)
