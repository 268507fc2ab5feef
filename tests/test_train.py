"""Outer loop: loop vs vmap meta-batches, exact resume, divergence, checkpoints, schedules, tasks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reptile import tree
from reptile.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from reptile.losses import make_loss, params_of
from reptile.models import MLP, model_spec
from reptile.tasks import LeastSquaresTaskDistribution, SineTaskDistribution, minibatch_indices
from reptile.train import MetaTrainer, TrainConfig, TrainingDiverged


class Crash:
    """A callback that kills the run (like SIGKILL: no checkpoint written) after iteration ``at``."""

    every = 1

    def __init__(self, at):
        self.at = at

    def __call__(self, iteration, phi):
        if iteration == self.at:
            raise RuntimeError("simulated crash")
        return {}


def _sine(dtype=torch.float64, sizes=(1, 16, 16, 1)):
    torch.manual_seed(0)
    model = MLP(sizes).to(dtype)
    dist = SineTaskDistribution(dtype=dtype)
    return model, make_loss(model), params_of(model), lambda rng: dist.sample(rng).minibatches(5, 10, rng)


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml", "maml"])
def test_vmap_and_loop_meta_batches_agree(algorithm):
    model, loss_fn, phi, sampler = _sine()
    runs = {}
    for batching in ("loop", "vmap"):
        cfg = TrainConfig(algorithm=algorithm, meta_batch=4, iterations=5, batching=batching)
        runs[batching] = MetaTrainer(loss_fn, phi, sampler, cfg).run(progress=False).params
    assert float(tree.norm(tree.sub(runs["loop"], runs["vmap"]))) < 1e-10


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    model, loss_fn, phi, sampler = _sine(torch.float32)
    cfg = dict(iterations=40, meta_batch=2, inner_optimizer="adam", inner_lr=0.001, outer_lr=1.0,
               checkpoint_every=6, log_every=5)
    full = MetaTrainer(loss_fn, phi, sampler, TrainConfig(**cfg), tmp_path / "a").run(progress=False)
    first = MetaTrainer(loss_fn, phi, sampler, TrainConfig(**cfg), tmp_path / "b", callbacks=[Crash(23)])
    with pytest.raises(RuntimeError, match="simulated"):
        first.run(progress=False)                  # dies in iteration 23; the last checkpoint is 18
    second = MetaTrainer(loss_fn, phi, sampler, TrainConfig(**cfg), tmp_path / "b")
    assert second.resume() and second.iteration == 18
    resumed = second.run(progress=False)
    for k in phi:  # same seed, same device, same operations: bitwise equal
        assert torch.equal(full.params[k], resumed.params[k])
    import pandas as pd
    a = pd.read_csv(tmp_path / "a" / "metrics.csv")
    b = pd.read_csv(tmp_path / "b" / "metrics.csv")
    pd.testing.assert_frame_equal(a.drop(a[a.metric == "seconds"].index).reset_index(drop=True),
                                  b.drop(b[b.metric == "seconds"].index).reset_index(drop=True))


def test_outer_torch_optimizer_path_runs_and_resumes(tmp_path):
    model, loss_fn, phi, sampler = _sine()
    cfg = dict(iterations=12, outer_optimizer="adam", outer_lr=0.01, checkpoint_every=5)
    full = MetaTrainer(loss_fn, phi, sampler, TrainConfig(**cfg), tmp_path / "a").run(progress=False)
    with pytest.raises(RuntimeError, match="simulated"):
        MetaTrainer(loss_fn, phi, sampler, TrainConfig(**cfg), tmp_path / "b", callbacks=[Crash(7)]).run(progress=False)
    t = MetaTrainer(loss_fn, phi, sampler, TrainConfig(**cfg), tmp_path / "b")
    t.resume()
    assert t.iteration == 5
    res = t.run(progress=False)
    assert all(torch.equal(full.params[k], res.params[k]) for k in phi)
    assert float(tree.norm(tree.sub(full.params, phi))) > 0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model, loss_fn, phi, sampler = _sine()

    calls = []

    def poisoned(rng):  # the 7th task has NaN targets
        calls.append(1)
        x, y = sampler(rng)
        return x, y * (float("nan") if len(calls) == 7 else 1.0)

    cfg = TrainConfig(iterations=200, checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"iteration 7 .*last good checkpoint .*ckpt-00000006.pt"):
        MetaTrainer(loss_fn, phi, poisoned, cfg, tmp_path).run(progress=False)
    path, ckpt = latest_checkpoint(tmp_path / "checkpoints")
    assert ckpt["iteration"] == 6
    assert tree.all_finite(ckpt["params"])


def test_bad_config_values_are_named():
    for bad, match in [(dict(algorithm="mamal"), "unknown algorithm"), (dict(algorithm="maml", inner_steps=1), "inner_steps >= 2"),
                       (dict(inner_steps=0), "inner_steps >= 1"), (dict(inner_lr=0.0), "inner_lr"),
                       (dict(outer_lr=float("nan")), "outer_lr"), (dict(batching="vmap", inner_optimizer="adam"), "reset_inner_state"),
                       (dict(algorithm="combination", inner_steps=3, weights=[1, 1]), "3 weights")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_meta_gradient_bad_inputs():
    from reptile.algorithms import meta_gradient
    model, loss_fn, phi, sampler = _sine()
    batches = sampler(np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown algorithm"):
        meta_gradient("mamll", loss_fn, phi, batches, 0.1)
    with pytest.raises(ValueError, match="at least 2 minibatches"):
        meta_gradient("maml", loss_fn, phi, (batches[0][:1], batches[1][:1]), 0.1)
    with pytest.raises(ValueError, match="at least 1 minibatches"):
        meta_gradient("reptile", loss_fn, phi, (batches[0][:0], batches[1][:0]), 0.1)
    for alpha in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="alpha must be a positive"):
            meta_gradient("reptile", loss_fn, phi, batches, alpha)
    with pytest.raises(ValueError, match="do not fit the model"):
        meta_gradient("reptile", loss_fn, phi, (torch.zeros(2, 3, 7, dtype=torch.float64), torch.zeros(2, 3, 1, dtype=torch.float64)), 0.1)
    with pytest.raises(ValueError, match="does not match target shape"):
        meta_gradient("reptile", loss_fn, phi, (batches[0], batches[1][..., 0]), 0.1)
    with pytest.raises(ValueError, match="needs k = 5 weights"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights=[1.0])


def test_checkpoint_roundtrip_and_refusals(tmp_path):
    p = save_checkpoint(tmp_path / "c.pt", {"params": {"w": torch.ones(3)}, "iteration": 4})
    assert load_checkpoint(p)["iteration"] == 4
    raw = p.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "other.pt").write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="not a reptile-lab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    model, loss_fn, phi, sampler = _sine()
    MetaTrainer(loss_fn, phi, sampler, TrainConfig(iterations=2), tmp_path, model_spec=model_spec(model)).run(progress=False)
    other = MLP((1, 8, 1))
    t = MetaTrainer(make_loss(other), params_of(other), sampler, TrainConfig(iterations=2), tmp_path,
                    model_spec=model_spec(other))
    with pytest.raises(ValueError, match="another model"):
        t.resume()


def test_resume_with_other_settings_is_refused(tmp_path):
    model, loss_fn, phi, sampler = _sine()
    MetaTrainer(loss_fn, phi, sampler, TrainConfig(iterations=4, checkpoint_every=2), tmp_path).run(progress=False, until=2)
    t = MetaTrainer(loss_fn, phi, sampler, TrainConfig(iterations=4, inner_lr=0.5), tmp_path)
    with pytest.raises(ValueError, match="inner_lr"):
        t.resume()


def test_cycle_schedule_is_an_epoch_and_carries_over():
    rng = np.random.default_rng(0)
    idx = minibatch_indices(50, 5, 10, "cycle", rng)
    assert sorted(idx.ravel()) == list(range(50))
    idx = minibatch_indices(10, 3, 4, "cycle", rng)  # 12 > 10: the third batch straddles two shuffles
    assert sorted(idx.ravel()[:10]) == list(range(10))


def test_separate_tail_and_replacement_schedules():
    rng = np.random.default_rng(1)
    for _ in range(20):
        idx = minibatch_indices(30, 4, 5, "separate_tail", rng, tail=10)
        assert not set(idx[:-1].ravel()) & set(idx[-1])
        rep = minibatch_indices(30, 4, 5, "replacement", rng)
        assert all(len(set(row)) == 5 for row in rep)
    with pytest.raises(ValueError, match="exceeds the 8 examples"):
        minibatch_indices(8, 2, 9, "cycle", rng)
    with pytest.raises(ValueError, match="unknown minibatch schedule"):
        minibatch_indices(8, 2, 2, "shuffle", rng)


def test_least_squares_solution_set_is_exact():
    task = LeastSquaresTaskDistribution(dim=6, n_points=3).sample(np.random.default_rng(0))
    s = task.solution_set()
    assert s.dim == 3
    w = torch.randn(6, dtype=torch.float64)
    p = s.project(w)
    a, y = task.inputs, task.targets[:, 0]
    assert torch.allclose(a @ p, y, atol=1e-10)                    # on the solution set
    assert torch.allclose(s.project(p), p, atol=1e-12)              # idempotent
    assert abs(float((w - p) @ (s.basis[:, 0]))) < 1e-10            # the residual is orthogonal to W
    assert torch.allclose(a @ task.w, y, atol=1e-10)                # noiseless: the true weights solve it


def test_sine_variants_follow_the_papers():
    rng = np.random.default_rng(0)
    r = SineTaskDistribution("reptile")
    m = SineTaskDistribution("maml")
    assert r.phase == (0.0, 2 * np.pi) and m.phase == (0.0, np.pi)
    t = r.sample(rng)
    x, y = t.examples(rng)
    assert x.shape == (50, 1) and float(x[0]) == -5.0 and float(x[-1]) == 5.0
    assert torch.allclose(y, t.amplitude * torch.sin(x + t.phase))
    tm = m.sample(rng)
    assert 0.1 <= tm.amplitude <= 5.0 and 0 <= tm.phase <= np.pi
    assert tm.minibatches(1, 10, rng)[0].shape == (1, 10, 1)
    with pytest.raises(ValueError, match="unknown sine variant"):
        SineTaskDistribution("blog")
