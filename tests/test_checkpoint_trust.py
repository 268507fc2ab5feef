"""Issue 18 items 3 and 5: checkpoints hold finite weights, and an untrusted one never acts.

A crafted checkpoint here always has a valid header and checksum (``save_checkpoint`` writes it)
and plain data only, so ``weights_only=True`` accepts it: what stops it is the payload check.
"""
from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import pytest
import torch

from reptile import MLP, MetaTrainer, TrainConfig, TrainingDiverged, make_loss, params_of
from reptile.checkpoint import (CheckpointError, MAGIC, list_checkpoints, load_checkpoint, resolve_checkpoint,
                                save_checkpoint)
from reptile.cli import main
from reptile.models import model_spec


def _run(tmp_path: Path, **cfg) -> Path:
    model = MLP((1, 4, 1))
    x = torch.linspace(-1, 1, 10).reshape(5, 2, 1)
    out = tmp_path / "run"
    MetaTrainer(make_loss(model), params_of(model), lambda rng: (x, x), TrainConfig(**cfg), out,
                model_spec=model_spec(model), extra={"family": "sine", "args": {"hidden": "4"}}).run(progress=False)
    return out


@pytest.fixture
def good(tmp_path) -> dict:
    """A genuine checkpoint payload of a two-iteration sine run (hidden 4)."""
    out = tmp_path / "good"
    assert main(["train", "sine", "--iterations", "2", "--hidden", "4", "--eval-tasks", "1", "--no-progress",
                 "--out", str(out)]) == 0
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])


# ------------------------------------------------------------------------- item 3: finite only
def test_a_diverging_outer_step_writes_no_checkpoint_of_non_finite_parameters(tmp_path):
    model = MLP((1, 4, 1))
    x = torch.linspace(-1, 1, 10).reshape(5, 2, 1)
    # a finite update (about 20) times eps = 1e38 overflows float32 parameters (max 3.4e38) to inf
    cfg = TrainConfig(iterations=5, checkpoint_every=1, outer_lr=1e38, anneal=False)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as info:
        MetaTrainer(make_loss(model), params_of(model), lambda rng: (x, x + 100), cfg, out).run(progress=False)
    for p in list_checkpoints(out / "checkpoints"):
        assert all(torch.isfinite(v).all() for v in load_checkpoint(p)["params"].values()), p
    assert "no checkpoint was written" in str(info.value)  # the one written before the overflow was not good


def test_save_refuses_non_finite_parameters(tmp_path):
    model = MLP((1, 4, 1))
    phi = params_of(model)
    t = MetaTrainer(make_loss(model), phi, lambda rng: None, TrainConfig(iterations=2), tmp_path / "run")
    t.phi = {k: v.fill_(math.nan) for k, v in t.phi.items()}
    with pytest.raises(TrainingDiverged, match="non-finite parameters"):
        t.save()
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")


def test_loading_refuses_a_checkpoint_with_non_finite_parameters(good, tmp_path, capsys):
    good["params"] = {k: torch.full_like(v, math.inf) for k, v in good["params"].items()}
    bad = save_checkpoint(tmp_path / "inf.pt", good)
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        resolve_checkpoint(bad)
    capsys.readouterr()
    assert main(["eval", str(bad), "--eval-tasks", "1"]) == 1
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "Traceback" not in err


def test_resume_skips_a_non_finite_newest_checkpoint(tmp_path):
    out = _run(tmp_path, iterations=3, checkpoint_every=1)
    newest = list_checkpoints(out / "checkpoints")[-1]
    ckpt = load_checkpoint(newest)
    ckpt["params"] = {k: v * math.nan for k, v in ckpt["params"].items()}
    save_checkpoint(newest, ckpt)
    model = MLP((1, 4, 1))
    t = MetaTrainer(make_loss(model), params_of(model), lambda rng: None, TrainConfig(iterations=3, checkpoint_every=1),
                    out, model_spec=model_spec(model), extra={"family": "sine", "args": {"hidden": "4"}})
    assert t.resume()
    assert t.iteration == 2 and all(torch.isfinite(v).all() for v in t.phi.values())
    t.close()


# ------------------------------------------------------------------------- item 5: untrusted
@pytest.mark.parametrize("change, needle", [
    (lambda c: c["params"].update({"net.0.weight": [1.0, 2.0]}), "not a floating-point tensor"),
    (lambda c: c.pop("iteration"), "iteration is None"),
    (lambda c: c.update(iteration="7"), "iteration is '7'"),
    (lambda c: c.update(params={}), "holds no parameters"),
    (lambda c: c.update(surprise=1), "unknown entries ['surprise']"),
    (lambda c: c.update(format="other"), "format is 'other'"),
    (lambda c: c["params"].update({k: torch.empty(v.shape, device="meta") for k, v in c["params"].items()}),
     "device 'meta'"),
    (lambda c: c.update(config={**c["config"], "iterations": -3}), "training config is invalid"),
    (lambda c: c.update(extra={"family": "sine", "args": "hidden=4"}), "extra['args'] is not a dict"),
    (lambda c: c.update(model_spec={"name": "mlp", "kwargs": {"sizes": [1, 1_000_000, 1_000_000, 1]}}),
     "model_spec and its parameters disagree"),
])
def test_malformed_payloads_are_refused_with_a_named_reason(good, tmp_path, capsys, change, needle):
    change(good)
    bad = save_checkpoint(tmp_path / "crafted.pt", good)
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(bad)
    assert needle in str(info.value)
    capsys.readouterr()
    assert main(["eval", str(bad), "--eval-tasks", "1"]) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_a_checkpoint_never_chooses_where_files_go(good, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPTILE_CACHE", str(tmp_path / "cache"))
    elsewhere = tmp_path / "elsewhere" / "deep"
    good["extra"] = {"family": "fewshot", "args": {**good["extra"]["args"], "dataset": "glyphs",
                                                    "data_dir": str(elsewhere)}}
    good["model_spec"] = {"name": "mlp", "kwargs": {"sizes": [1, 3, 1], "activation": "tanh"}}  # not its params
    bad = save_checkpoint(tmp_path / "crafted.pt", good)
    assert main(["eval", str(bad), "--eval-tasks", "1"]) == 1
    assert "model_spec and its parameters disagree" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "cache").exists()


def test_saved_data_folders_are_never_written_or_created(tmp_path):
    from reptile.runfolder import safe_saved_args
    assert safe_saved_args({"dataset": "glyphs", "data_dir": "/somewhere/else"})["data_dir"] is None
    # a dataset that is only read keeps its folder; the reader creates nothing
    assert safe_saved_args({"dataset": "omniglot", "data_dir": str(tmp_path / "o")})["data_dir"] == str(tmp_path / "o")
    with pytest.raises(ValueError, match="device 'meta' cannot hold data"):
        safe_saved_args({"device": "meta"})


def test_the_header_is_read_before_the_body(tmp_path):
    big = tmp_path / "weights.bin"
    with open(big, "wb") as f:  # 64 MB of something that is not a checkpoint
        f.write(b"PK\x03\x04")
        f.truncate(64 * 2 ** 20)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="not a reptile-lab checkpoint"):
            load_checkpoint(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20, f"read {peak} bytes of a file that is not a checkpoint"


def test_an_overlong_header_line_is_refused_without_reading_on(tmp_path):
    p = tmp_path / "ckpt.pt"
    p.write_bytes(MAGIC + b"1" * 10_000 + b"\n")
    with pytest.raises(CheckpointError, match="malformed header"):
        load_checkpoint(p)
