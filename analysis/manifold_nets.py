"""Section 5.2 on networks: distances from meta-learned initializations to unseen tasks' solution sets.

The paper's second explanation of Reptile (section 5.2) says it behaves like SGD on
``E_tau[1/2 D(phi, W_tau)^2]`` and so settles near the point closest to every task's solution
manifold. This module measures that on real models with the certified projection of
:mod:`analysis.manifolds`:

* :func:`sine_setup`, :func:`probe_tasks` -- the blog's sine MLP (1-64-64-1 tanh, float32 training,
  the engine's defaults) and unseen sine tasks whose solution set is ``{theta : f_theta(x_i) = y_i}``
  on the ``n`` equally spaced points of [-5, 5] (10 by default: on 50 points the fit constraints
  are numerically degenerate at initialization, ``cond(J) ~ 1e12-1e15``, and neither
  Gauss-Newton nor L-BFGS reaches the set in float64);
* :class:`DistanceCallback` -- a :class:`reptile.train.Callback` logging ``dist_mean_sq`` (mean of
  ``D(phi, W_tau)^2`` over fixed probe tasks), ``dist_mean``, ``dist_certified`` (fraction of
  certified projections) during meta-training, beside :class:`analysis.alignment.AlignmentCallback`;
* :func:`train_initializations` -- random init, joint training, MAML, FOMAML and Reptile from the
  same start with the same budget (iterations, tasks, inner steps);
* :func:`distance_summary` -- mean squared distance over probe tasks with a 95% confidence interval
  (t interval over tasks; uncertified projections are excluded and counted);
* :func:`update_vs_projection` -- Reptile's update ``phi~_k - phi`` against the projection step
  ``P_tau(phi) - phi`` on the MLP (full-batch gradient descent on the task's points);
* :func:`glyph_setup`, :func:`glyph_probe_tasks` -- the few-shot CNN on 5-way glyph tasks, whose
  solution set is ``{theta : mean cross-entropy on the task's training examples <= level}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.stats
import torch

from reptile import tree
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN, seeded_init
from reptile.tasks import SineTaskDistribution
from reptile.train import MetaTrainer, TrainConfig
from reptile.types import Batch, LossFn, Params

from .manifolds import DEFAULT_LEVEL, certified_projection, reptile_vs_projection
from .progress import bar

__all__ = ["ALGORITHMS", "sine_setup", "probe_tasks", "DistanceCallback", "train_initializations",
           "DistanceSummary", "distance_summary", "update_vs_projection", "glyph_setup", "glyph_probe_tasks"]

#: the initializations compared ("random" is the untrained start)
ALGORITHMS = ("reptile", "fomaml", "maml", "joint")


def sine_setup(seed: int = 0, hidden: Sequence[int] = (64, 64), k: int = 5, batch: int = 10
               ) -> tuple[LossFn, Params, Callable[[np.random.Generator], Batch]]:
    """The blog's sine-wave setup ``(loss_fn, phi, sampler)``: a seeded ``1-hidden-1`` tanh MLP
    (float32), tasks ``a sin(x + b)`` on the 50-point grid, ``k`` minibatches of ``batch`` points
    in a cycle (one epoch for k = 5, batch = 10)."""
    model = seeded_init(seed, lambda: MLP((1, *hidden, 1), "tanh"))
    dist = SineTaskDistribution()

    def sampler(rng: np.random.Generator) -> Batch:
        return dist.sample(rng).minibatches(k, batch, rng, "cycle")
    return make_loss(model, "mse"), params_of(model), sampler


def probe_tasks(n_tasks: int, seed: int = 2**20, points: int = 10) -> list[Batch]:
    """``n_tasks`` unseen sine tasks as float64 ``(x[points, 1], y[points, 1])`` on the ``points``
    equally spaced points of [-5, 5], from ``numpy.random.default_rng([seed, j])``."""
    dist = SineTaskDistribution(dtype=torch.float64)
    out = []
    for j in range(n_tasks):
        t = dist.sample(np.random.default_rng([seed, j]))
        out.append(t.grid(points))
    return out


def _f64(phi: Params) -> Params:
    return {k: v.detach().to(torch.float64) for k, v in phi.items()}


@dataclass(frozen=True)
class DistanceSummary:
    """``D(phi, W_tau)^2`` over probe tasks: mean, 95% t-interval half-width, certified count.

    ``sq`` holds every task's value (``nan`` where the projection was not certified); ``seconds``
    the wall time of all projections.
    """

    name: str
    sq: np.ndarray
    mean: float
    ci95: float
    certified: int
    seconds: float

    @property
    def n(self) -> int:
        return len(self.sq)


def _ci(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean()), half


def distance_summary(name: str, loss_fn: LossFn, phi: Params, datas: Sequence[Batch], progress: bool = False,
                     **options: object) -> DistanceSummary:
    """Certified projections of ``phi`` (float64) onto every probe task; see :class:`DistanceSummary`."""
    import time
    tic = time.perf_counter()
    p64 = _f64(phi)
    sq = []
    with bar(progress, len(datas), f"distances: {name}") as b:
        for d in datas:
            pr = certified_projection(loss_fn, p64, d, **options)  # type: ignore[arg-type]
            sq.append(pr.distance ** 2 if pr.converged else float("nan"))
            b.update(1)
    arr = np.array(sq)
    mean, half = _ci(arr)
    return DistanceSummary(name, arr, mean, half, int(np.isfinite(arr).sum()), time.perf_counter() - tic)


class DistanceCallback:
    """A :class:`reptile.train.Callback` logging the distance from ``phi`` to fixed probe tasks'
    solution sets (certified projections, float64).

    Args:
        loss_fn: scalar loss of (params, batch) with a ``.model`` (:func:`reptile.make_loss`) or pass
            ``predict`` through ``options``.
        datas: the probe tasks' examples (e.g. :func:`probe_tasks`), fixed for the whole run.
        every: measure every ``every`` outer iterations.
        prefix: metric-name prefix.
        **options: keyword arguments of :func:`analysis.manifolds.certified_projection`.
    Returns (when called):
        ``{prefix + "mean_sq": mean of certified D^2, prefix + "mean": mean D, prefix + "certified":
        fraction certified}``.
    """

    def __init__(self, loss_fn: LossFn, datas: Sequence[Batch], every: int, prefix: str = "dist_",
                 **options: object) -> None:
        if every < 1 or not datas:
            raise ValueError(f"every must be >= 1 and datas non-empty, got every={every}, {len(datas)} tasks")
        self.loss_fn, self.datas, self.every, self.prefix, self.options = loss_fn, list(datas), int(every), prefix, options

    def measure(self, phi: Params) -> DistanceSummary:
        return distance_summary("callback", self.loss_fn, phi, self.datas, **self.options)

    def __call__(self, iteration: int, phi: Params) -> dict[str, float]:
        s = self.measure(phi)
        ok = s.sq[np.isfinite(s.sq)]
        return {self.prefix + "mean_sq": s.mean, self.prefix + "mean": float(np.sqrt(ok).mean()) if len(ok) else
                float("nan"), self.prefix + "certified": s.certified / s.n}


def train_initializations(loss_fn: LossFn, phi: Params, sampler: Callable[[np.random.Generator], Batch],
                          algorithms: Sequence[str] = ALGORITHMS, iterations: int = 1000, seed: int = 0,
                          callbacks: Callable[[], Sequence[object]] | None = None, progress: bool = False,
                          **config: object) -> dict[str, tuple[Params, list[dict[str, float]]]]:
    """Meta-train each algorithm from the same ``phi`` with the same budget.

    Every run uses :class:`reptile.train.TrainConfig` defaults (the blog's sine settings: k = 5
    SGD steps of 0.02, outer step 0.1 annealed to 0, one task per iteration) with ``iterations``,
    ``seed`` and ``**config`` overrides, and the same task sequence (same seed).

    Returns:
        ``{algorithm: (phi_T, history)}``; ``history`` holds the trainer's rows (with the
        callbacks' metrics, e.g. :class:`DistanceCallback`'s).
    """
    out = {}
    for alg in algorithms:
        cfg = TrainConfig(algorithm=alg, iterations=iterations, seed=seed, log_every=max(1, iterations),
                          checkpoint_every=max(1, iterations), **config)  # type: ignore[arg-type]
        trainer = MetaTrainer(loss_fn, phi, sampler, cfg, callbacks=list(callbacks()) if callbacks else [])
        res = trainer.run(progress=progress)
        out[alg] = (tree.clone(res.params), [dict(h) for h in res.history])
    return out


def update_vs_projection(loss_fn: LossFn, phi: Params, data: Batch, alpha: float, ks: Sequence[int], **options: object):
    """Reptile's update after k full-batch GD steps of size ``alpha`` on the task's points against the
    certified projection step (float64); ``(projection, [UpdateComparison per k])``.

    The inner loop sees exactly the examples that define the solution set, so the k -> infinity
    limit of gradient descent is *a* point of the set (on least squares: the projection).
    """
    p64 = _f64(phi)
    x, y = (t.to(torch.float64) for t in data)
    proj = certified_projection(loss_fn, p64, (x, y), **options)  # type: ignore[arg-type]
    kmax = max(ks)
    batches = (x.unsqueeze(0).expand(kmax, *x.shape), y.unsqueeze(0).expand(kmax, *y.shape))
    return proj, reptile_vs_projection(loss_fn, p64, batches, alpha, ks, proj.point)


# -- the few-shot CNN ------------------------------------------------------------------------------
def glyph_setup(seed: int = 0, n_way: int = 5, shots: int = 5, filters: int = 16, inner_steps: int = 5,
                inner_batch: int = 10):
    """``(loss_fn, phi, sampler, test_split)`` for 5-way glyph tasks (``reptile.data.load_glyphs``,
    28x28 grey images) and a seeded ``OmniglotCNN`` with ``filters`` channels and batch norm with
    batch statistics (float32). The sampler draws a meta-training episode of ``shots`` examples per
    class and ``inner_steps`` minibatches of ``inner_batch`` of them (cycling)."""
    from reptile.data import load_glyphs
    from reptile.data.episodes import sample_episode
    from reptile.tasks.schedules import gather, minibatch_indices

    splits = load_glyphs(seed=0)
    model = seeded_init(seed, lambda: OmniglotCNN(n_way=n_way, filters=filters))
    train = splits["train"]

    def sampler(rng: np.random.Generator) -> Batch:
        ep = sample_episode(train, rng, n_way, shots, 0)
        return gather(ep.train_x, ep.train_y, minibatch_indices(len(ep.train_y), inner_steps, inner_batch, "cycle", rng))
    return make_loss(model, "cross_entropy"), params_of(model), sampler, splits["test"]


def glyph_probe_tasks(dataset, n_tasks: int, n_way: int = 5, shots: int = 5, seed: int = 2**20) -> list[Batch]:
    """``n_tasks`` unseen episodes' training examples ``(x[n_way*shots, 1, 28, 28], y)`` (float64 images)."""
    from reptile.data.episodes import sample_episode
    out = []
    for j in range(n_tasks):
        ep = sample_episode(dataset, np.random.default_rng([seed, j]), n_way, shots, 0)
        out.append((ep.train_x.to(torch.float64), ep.train_y))
    return out


LEVEL = DEFAULT_LEVEL


def run_network_experiment(iterations: int = 3000, every: int = 500, n_probe: int = 6, n_eval: int = 30,
                           seed: int = 0, algorithms: Sequence[str] = ALGORITHMS, out_dir=None,
                           progress: bool = False, hidden: Sequence[int] = (64, 64)) -> tuple[list[dict], list[dict]]:
    """Section 5.2 on the sine MLP: train every algorithm from one seeded init (same budget), track
    the mean squared distance to ``n_probe`` fixed probe tasks every ``every`` iterations
    (:class:`DistanceCallback`), then measure ``E D(phi, W_tau)^2`` over ``n_eval`` other unseen
    tasks for the random init and each trained one.

    Returns:
        ``(curve_rows, summary_rows)``: ``{algorithm, iteration, mean_sq, mean, certified}`` per
        measurement (the random init's value at iteration 0 for every algorithm) and
        ``{init, mean_sq, ci95, certified, n, seconds}`` per initialization. With ``out_dir``, also
        writes ``manifolds_networks_curve.csv``, ``manifolds_networks_summary.csv`` and the trained
        parameters ``manifolds_networks_inits.pt``.
    """
    import pandas as pd
    from pathlib import Path

    from . import artifacts
    loss_fn, phi, sampler = sine_setup(seed, hidden)
    probes = probe_tasks(n_probe, seed=2**20 + seed)
    cb = lambda: [DistanceCallback(loss_fn, probes, every)]  # noqa: E731
    start = cb()[0](0, phi)
    runs = train_initializations(loss_fn, phi, sampler, algorithms, iterations, seed, cb, progress)
    curve = []
    for alg, (_, hist) in runs.items():
        curve.append(dict(algorithm=alg, iteration=0, mean_sq=start["dist_mean_sq"], mean=start["dist_mean"],
                          certified=start["dist_certified"]))
        for h in hist:
            if "dist_mean_sq" in h:
                curve.append(dict(algorithm=alg, iteration=int(h["iteration"]), mean_sq=h["dist_mean_sq"],
                                  mean=h["dist_mean"], certified=h["dist_certified"]))
    inits = {"random": phi, **{a: r[0] for a, r in runs.items()}}
    summary, per_task = evaluate_initializations(loss_fn, inits, probe_tasks(n_eval, seed=2**21 + seed), progress)
    for r in summary:
        r["iterations"] = 0 if r["init"] == "random" else iterations
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        artifacts.write_csv(out / "manifolds_networks_curve.csv", pd.DataFrame(curve))
        artifacts.write_csv(out / "manifolds_networks_summary.csv", pd.DataFrame(summary))
        artifacts.write_csv(out / "manifolds_networks_tasks.csv", pd.DataFrame(per_task))
        torch.save(inits, out / "manifolds_networks_inits.pt")
    return curve, summary


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` over the tasks where both are finite and its 95% t half-width."""
    d = a - b
    return _ci(d)


def evaluate_initializations(loss_fn: LossFn, inits: dict[str, Params], datas: Sequence[Batch],
                             progress: bool = False) -> tuple[list[dict], list[dict]]:
    """``D(phi, W_tau)^2`` of every initialization on the same tasks: summary rows ``{init, mean_sq,
    ci95, certified, n, seconds, paired_vs_random, paired_vs_random_ci95, paired_vs_joint, ...}``
    (paired differences over the same tasks: their spread is far smaller than the tasks' spread)
    and per-task rows ``{init, task, sq}``."""
    sums = {name: distance_summary(name, loss_fn, p, datas, progress=progress) for name, p in inits.items()}
    summary, per_task = [], []
    for name, s in sums.items():
        row = dict(init=name, mean_sq=s.mean, ci95=s.ci95, certified=s.certified, n=s.n, seconds=s.seconds)
        for ref in ("random", "joint"):
            if ref in sums and ref != name:
                row[f"paired_vs_{ref}"], row[f"paired_vs_{ref}_ci95"] = paired(s.sq, sums[ref].sq)
        summary.append(row)
        per_task += [dict(init=name, task=i, sq=v) for i, v in enumerate(s.sq)]
    return summary, per_task


def cnn_experiment(iterations: int = 500, n_tasks: int = 20, filters: int = 16, seed: int = 0, out_dir=None,
                   progress: bool = False, level: float = LEVEL) -> dict:
    """The few-shot CNN: ``E D(phi, W_tau)^2`` over unseen 5-way 5-shot glyph tasks for the untrained
    init and a Reptile-trained one.

    Reptile as in the paper's Omniglot runs but short: Adam inner loop (lr 0.001, 5 steps, batch 10),
    meta-batch 5, outer step 1.0 annealed to 0, ``iterations`` outer steps. The solution set of a
    task: mean cross-entropy on its 25 training examples ``<= level`` (``loss_level`` constraint;
    batch-norm statistics over those 25 examples), float64.

    Returns:
        ``{"untrained": row, "reptile": row, "filters": ..., "iterations": ...}`` with rows
        ``{mean_sq, ci95, certified, n, seconds}``; with ``out_dir`` also ``manifolds_cnn.csv``.
    """
    import pandas as pd
    from pathlib import Path

    from . import artifacts
    loss_fn, phi, sampler, test = glyph_setup(seed, filters=filters)
    cfg = TrainConfig(algorithm="reptile", inner_optimizer="adam", inner_lr=0.001, inner_steps=5, inner_batch=10,
                      outer_lr=1.0, meta_batch=5, iterations=iterations, seed=seed, log_every=max(1, iterations),
                      checkpoint_every=max(1, iterations))
    trained = MetaTrainer(loss_fn, phi, sampler, cfg).run(progress=progress).params
    datas = glyph_probe_tasks(test, n_tasks)
    out: dict = {"filters": filters, "iterations": iterations}
    rows, sq = [], {}
    for name, p in (("untrained", phi), ("reptile", trained)):
        s = distance_summary(name, loss_fn, p, datas, progress=progress, constraint="loss_level", level=level)
        sq[name] = s.sq
        out[name] = dict(mean_sq=s.mean, ci95=s.ci95, certified=s.certified, n=s.n, seconds=s.seconds)
        rows.append(dict(init=name, **out[name], filters=filters, iterations=0 if name == "untrained" else iterations,
                         level=level))
    out["paired"], out["paired_ci95"] = paired(sq["reptile"], sq["untrained"])
    rows[1]["paired_vs_untrained"], rows[1]["paired_vs_untrained_ci95"] = out["paired"], out["paired_ci95"]
    if out_dir is not None:
        artifacts.write_csv(Path(out_dir) / "manifolds_cnn.csv", pd.DataFrame(rows))
    return out
