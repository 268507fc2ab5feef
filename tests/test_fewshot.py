"""The few-shot protocol (reptile.fewshot): sampler, evaluation, presets, CLI. Fast: tiny data, tiny CNNs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from reptile import fewshot
from reptile.cli import main
from reptile.data import ImageClassDataset, sample_episode
from reptile.data.episodes import Episode
from reptile.fewshot import (PRESETS, EpisodeSampler, build_fewshot_model, evaluate_fewshot, evaluate_task,
                             predict_non_transductive, predict_transductive, summarize_seeds)
from reptile.inner import Adam, adapt
from reptile.losses import make_loss, params_of
from reptile.models import MiniImageNetCNN, OmniglotCNN


def tiny_dataset(n_classes: int = 12, per_class: int = 6, size: int = 28, channels: int = 1, seed: int = 0,
                 unique: bool = False) -> ImageClassDataset:
    """Classes = noisy copies of a random binary prototype (ink 0, background 1).

    ``unique``: image ``j`` of class ``c`` is the constant ``(c * per_class + j + 1) / 1000``, so an
    image's value identifies it.
    """
    rng = np.random.default_rng(seed)
    images = []
    for c in range(n_classes):
        shape = (per_class, size, size) if channels == 1 else (per_class, size, size, channels)
        if unique:
            vals = (c * per_class + np.arange(per_class) + 1) / 1000.0
            arr = np.broadcast_to(vals.reshape(-1, *([1] * (len(shape) - 1))), shape).astype(np.float32).copy()
        else:
            proto = (rng.random(shape[1:]) > 0.3).astype(np.float32)
            noise = rng.random(shape) < 0.1
            arr = np.where(noise, 1 - proto, proto).astype(np.float32)
        images.append(arr)
    return ImageClassDataset(images, [f"g{c // 4}/c{c}" for c in range(n_classes)],
                             [f"g{c // 4}" for c in range(n_classes)])


def _tiny_loader(data_dir, seed, rotations):
    return {"train": tiny_dataset(12, 12, seed=1), "val": tiny_dataset(6, 12, seed=2),
            "test": tiny_dataset(8, 12, seed=3)}


@pytest.fixture
def tiny_registered():
    fewshot.register_dataset("tiny", _tiny_loader)
    yield "tiny"
    fewshot.DATASET_LOADERS.pop("tiny", None)
    fewshot.load_splits.cache_clear()


def small_cnn(ways: int = 5, filters: int = 4, seed: int = 0) -> OmniglotCNN:
    torch.manual_seed(seed)
    return OmniglotCNN(ways, filters=filters)


# ---------------------------------------------------------------------------------- presets
def test_presets_equal_the_paper_tables():
    t3 = {  # Table 3, Omniglot: 5-way | 20-way
        "inner_lr": (0.001, 0.0005), "inner_batch": (10, 20), "inner_steps": (5, 10), "train_shots": (10, 10),
        "outer_lr": (1.0, 1.0), "iterations": (100_000, 200_000), "meta_batch": (5, 5),
        "eval_inner_steps": (50, 50), "eval_inner_batch": (5, 10)}
    for name, col in (("omniglot-5w1s", 0), ("omniglot-5w5s", 0), ("omniglot-20w1s", 1), ("omniglot-20w5s", 1)):
        d = PRESETS[name].defaults()
        assert {k: d[k] for k in t3} == {k: v[col] for k, v in t3.items()}, name
        assert d["inner_optimizer"] == "adam"
        assert (d["ways"], d["shots"]) == ((5 if col == 0 else 20), (1 if "1s" in name else 5))
    t4 = {  # Table 4, Mini-ImageNet: 1-shot | 5-shot
        "inner_lr": (0.001, 0.001), "inner_batch": (10, 10), "inner_steps": (8, 8), "train_shots": (15, 15),
        "outer_lr": (1.0, 1.0), "iterations": (100_000, 100_000), "meta_batch": (5, 5),
        "eval_inner_batch": (5, 15), "eval_inner_steps": (50, 50)}
    for name, col in (("miniimagenet-5w1s", 0), ("miniimagenet-5w5s", 1)):
        d = PRESETS[name].defaults()
        assert {k: d[k] for k in t4} == {k: v[col] for k, v in t4.items()}, name
        assert (d["ways"], d["shots"]) == (5, 1 if col == 0 else 5)
    assert fewshot.PAPER_RESULTS["omniglot-5w1s"]["reptile"] == 95.39
    assert fewshot.PAPER_RESULTS["miniimagenet-5w5s"]["reptile+transduction"] == 65.99


def test_preset_resolution_and_shared_shots_flag(tiny_registered):
    from reptile.cli import build_parser
    from reptile.cli.train import resolve
    p = build_parser()
    a = resolve(p.parse_args(["train", "--preset", "omniglot-20w5s", "--dataset", "tiny"]))
    assert a.family == "fewshot" and (a.ways, a.shots, a.inner_batch, a.inner_steps, a.inner_lr) == (20, 5, 20, 10, 5e-4)
    a = resolve(p.parse_args(["train", "--preset", "omniglot-5w1s", "--shots", "10", "--inner-lr", "0.01"]))
    assert (a.shots, a.inner_lr) == (10, 0.01)           # typed values win over the preset
    a = resolve(p.parse_args(["train", "fewshot"]))      # no preset: Omniglot 5-way 1-shot
    assert (a.ways, a.shots, a.train_shots, a.eval_inner_batch) == (5, 1, 10, 5)
    a = resolve(p.parse_args(["train", "sine"]))         # --shots keeps its sine meaning and default
    assert a.shots == 10


# ---------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("schedule", ["cycle", "replacement", "separate_tail"])
def test_sampler_shapes_and_labels(schedule):
    ds = tiny_dataset(12, 6)
    s = EpisodeSampler(ds, ways=3, train_shots=4, inner_steps=5, inner_batch=4, schedule=schedule)
    x, y = s(np.random.default_rng(0))
    assert x.shape == (5, 4, 1, 28, 28) and y.shape == (5, 4) and y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) <= 2
    x2, y2 = s(np.random.default_rng(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)      # the generator is the only randomness


def test_cycle_is_one_epoch_when_sizes_match():
    ds = tiny_dataset(12, 12, unique=True)
    s = EpisodeSampler(ds, ways=5, train_shots=10, inner_steps=5, inner_batch=10)   # Table 3: 50 = 5 x 10
    x, y = s(np.random.default_rng(3))
    ids = x[:, :, 0, 0, 0].flatten()
    assert len(torch.unique(ids)) == 50                  # every training example exactly once
    assert torch.equal(torch.bincount(y.flatten()), torch.full((5,), 10))


def test_sampler_rejects_batches_larger_than_the_task():
    # the science names parameters (in backticks), not flags: the CLI turns them into --inner-batch
    with pytest.raises(ValueError, match="inner batch 5 .* lower `inner_batch` or raise `train_shots`"):
        EpisodeSampler(tiny_dataset(), ways=2, train_shots=2, inner_steps=3, inner_batch=5)


def test_channels_last_sampler_gives_the_same_values():
    ds = tiny_dataset(12, 6)
    a = EpisodeSampler(ds, 3, 4, 2, 4)(np.random.default_rng(1))[0]
    b = EpisodeSampler(ds, 3, 4, 2, 4, channels_last=True)(np.random.default_rng(1))[0]
    assert torch.equal(a, b) and b[0].is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------- evaluation
def test_no_test_example_is_used_for_fine_tuning():
    ds = tiny_dataset(10, 6, unique=True)
    model = small_cnn(5)
    base = make_loss(model, "cross_entropy")
    seen: list[torch.Tensor] = []

    def recording_loss(params, batch):
        seen.append(batch[0][:, 0, 0, 0].detach().clone())
        return base(params, batch)

    rng = np.random.default_rng(0)
    ep = sample_episode(ds, rng, 5, 3, test_shots=1)
    evaluate_task(model, recording_loss, params_of(model), ep, 7, 4, Adam(1e-3), rng)
    used = set(torch.cat(seen).tolist())
    assert used <= set(ep.train_x[:, 0, 0, 0].tolist())
    assert used.isdisjoint(ep.test_x[:, 0, 0, 0].tolist())
    assert len(seen) == 7


def test_non_transductive_logits_ignore_other_test_examples_transductive_do_not():
    torch.manual_seed(0)
    model = small_cnn(5, filters=6)
    phi = params_of(model)
    train_x, test_x = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    other = test_x.clone()
    other[1:] = torch.rand(4, 1, 28, 28) * 0.3
    nt, nt2 = (predict_non_transductive(model, phi, train_x, t) for t in (test_x, other))
    assert torch.allclose(nt[0], nt2[0], atol=1e-6)       # example 0 unchanged: its logits are unchanged
    tr, tr2 = (predict_transductive(model, phi, train_x, t) for t in (test_x, other))
    assert not torch.allclose(tr[0], tr2[0], atol=1e-3)   # shared statistics: they change
    # the vmapped predictor is the official loop: forward on train + one test example, last row
    loop = torch.stack([torch.func.functional_call(model, phi, (torch.cat([train_x, t[None]]),))[-1]
                        for t in test_x])
    assert torch.allclose(nt, loop, atol=1e-5)


class _MeanBN(nn.Module):
    """logits = [-z, z] with z the batch-normalized mean pixel value (batch statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1, affine=False, track_running_stats=False)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-1.0], [1.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.bn(x.mean((1, 2, 3))[:, None]))


def test_transductive_evaluation_exploits_shared_batch_statistics():
    # class 0 is darker than class 1; the test images are all brightened by 0.5. Shared statistics
    # of the test batch remove the shift (transductive: 2/2 right); statistics of the training
    # examples plus one test example do not (non-transductive: the darker test image looks bright).
    model = _MeanBN()
    phi = params_of(model)
    img = lambda v: torch.full((1, 4, 4), v)  # noqa: E731
    ep = Episode(train_x=torch.stack([img(0.4), img(0.6)]), train_y=torch.tensor([0, 1]),
                 test_x=torch.stack([img(0.9), img(1.1)]), test_y=torch.tensor([0, 1]), classes=np.arange(2))
    res = evaluate_task(model, make_loss(model, "cross_entropy"), phi, ep, 0, 1, Adam(1e-3),
                        np.random.default_rng(0))
    assert res == {"non_transductive": 0.5, "transductive": 1.0}


def test_evaluation_starts_every_task_from_the_same_state_and_restores_it():
    ds = tiny_dataset(10, 6)
    model = small_cnn(5)
    phi = params_of(model)
    loss_fn = make_loss(model, "cross_entropy")
    opt = Adam(1e-2)
    # a "trained" Adam state, as the trainer keeps it across tasks
    x, y = EpisodeSampler(ds, 5, 2, 3, 5)(np.random.default_rng(9))
    state = adapt(loss_fn, phi, (x, y), opt).state
    backup = {k: {n: t.clone() for n, t in v.items()} if isinstance(v, dict) else v.clone() for k, v in state.items()}
    kw = dict(n_way=5, shots=1, inner_steps=3, inner_batch=5, optimizer=opt, seed=4)
    ev = evaluate_fewshot(model, phi, ds, state=state, n_tasks=4, **kw)
    for k in ("m", "v"):
        assert all(torch.equal(state[k][n], backup[k][n]) for n in state[k])
    assert torch.equal(state["t"], backup["t"])
    assert all(torch.equal(v, p) for v, p in zip(phi.values(), params_of(model).values()))
    # task i alone gives what it gave in the sequence: no moments leak from one task to the next
    again = evaluate_fewshot(model, phi, ds, state=state, n_tasks=4, **kw)
    first = evaluate_fewshot(model, phi, ds, state=state, n_tasks=1, **kw)
    for m in ev.per_task:
        assert np.array_equal(ev.per_task[m], again.per_task[m])
        assert ev.per_task[m][0] == first.per_task[m][0]
    assert set(ev.metrics()) == {"accuracy", "accuracy_ci95", "accuracy_transductive", "accuracy_transductive_ci95"}
    assert ev.n_tasks == 4 and 0.0 <= ev.accuracy() <= 1.0


def test_the_state_matters_for_fine_tuning():
    # Adam with beta1 = 0 from fresh moments takes sign-like first steps; trained moments scale
    # the steps differently: the two protocols give different fine-tuned weights.
    ds = tiny_dataset(10, 6)
    model = small_cnn(5)
    phi, loss_fn, opt = params_of(model), make_loss(model, "cross_entropy"), Adam(1e-2)
    x, y = EpisodeSampler(ds, 5, 2, 3, 5)(np.random.default_rng(9))
    trained = adapt(loss_fn, phi, (x, y), opt).state
    batch = (x[:1].expand(3, *x.shape[1:]), y[:1].expand(3, *y.shape[1:]))
    a, b = adapt(loss_fn, phi, batch, opt).end, adapt(loss_fn, phi, batch, opt, trained).end
    assert not torch.allclose(a["classifier.weight"], b["classifier.weight"])


def test_model_follows_the_dataset_shape():
    color = tiny_dataset(6, 3, size=84, channels=3)
    m = build_fewshot_model(color, 5, filters=4)
    assert isinstance(m, MiniImageNetCNN) and m.in_channels == 3
    x = torch.rand(2, 3, 84, 84)
    assert m(x).shape == (2, 5)
    gray = build_fewshot_model(tiny_dataset(6, 3), 20)
    assert isinstance(gray, OmniglotCNN) and gray.filters == 64 and gray.classifier.out_features == 20


def test_summarize_seeds_uses_the_sample_std():
    m, s = summarize_seeds([0.95, 0.96, 0.94])
    assert m == pytest.approx(0.95) and s == pytest.approx(0.01)


# ---------------------------------------------------------------------------------- the CLI
def test_cli_preset_end_to_end(tiny_registered, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--dataset", "tiny", "--filters", "4", "--eval-tasks", "3", "--eval-inner-steps", "2",
              "--no-progress", "--transductive"]
    assert main(["train", "--preset", "omniglot-5w1s", "--iterations", "2", "--out", str(out), *common]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "accuracy_transductive" in text
    from reptile.checkpoint import latest_checkpoint
    _, ckpt = latest_checkpoint(out / "checkpoints")
    cfg, args = ckpt["config"], ckpt["extra"]["args"]
    assert (cfg["inner_lr"], cfg["inner_steps"], cfg["inner_batch"], cfg["meta_batch"], cfg["outer_lr"]) == \
        (0.001, 5, 10, 5, 1.0)
    assert (args["ways"], args["shots"], args["train_shots"], args["eval_inner_batch"]) == (5, 1, 10, 5)
    assert ckpt["extra"]["family"] == "fewshot" and cfg["iterations"] == 2
    # the trained Adam moments are found again for evaluation
    assert main(["eval", str(out), "--eval-tasks", "2", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["eval_adam_state_from_checkpoint"] == 1.0 and 0 <= metrics["accuracy"] <= 1
    # over runs (seeds)
    from reptile.cli.fewshot import report_main  # ``python -m reptile.fewshot``; was reptile.fewshot.main
    assert report_main(["report", str(out), "--eval-tasks", "2"]) == 0
    text = capsys.readouterr().out
    assert "over 1 run(s)" in text and "95% CI" in text


@pytest.mark.parametrize("algorithm,inner", [("fomaml", "adam"), ("maml", "sgd"), ("maml", "adam")])
def test_cli_first_and_second_order_maml_run(tiny_registered, tmp_path, algorithm, inner):
    rc = main(["train", "fewshot", "--algorithm", algorithm, "--inner-optimizer", inner, "--dataset", "tiny",
               "--ways", "3", "--train-shots", "4", "--inner-steps", "3", "--inner-batch", "6", "--meta-batch", "2",
               "--iterations", "2", "--filters", "3", "--eval-tasks", "2", "--eval-inner-steps", "1",
               "--no-progress", "--out", str(tmp_path / f"{algorithm}-{inner}")])
    assert rc == 0


def test_cli_reports_impossible_requests(tiny_registered, tmp_path, capsys):
    rc = main(["train", "--preset", "omniglot-20w1s", "--dataset", "tiny", "--iterations", "1", "--filters", "2",
               "--no-progress", "--out", str(tmp_path / "x")])
    assert rc == 1 and "fewer than --ways 20" in capsys.readouterr().err
