"""Issue 18 item 4 and issue 15 item 7: resume compares every setting that changes the numbers,
reads the settings back from the checkpoint, and may raise ``--iterations``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reptile import MLP, MetaTrainer, TrainConfig, make_loss, params_of
from reptile.checkpoint import latest_checkpoint
from reptile.cli import main
from reptile.models import model_spec
from reptile.cli.parsing import explicit_options
from reptile.runfolder import check_resume_settings, settings_from_checkpoint

# a run whose settings all differ from the defaults: retyping none of them must still resume it exactly
SETTINGS = ["--hidden", "5", "--dtype", "float64", "--schedule", "replacement", "--variant", "maml",
            "--seed", "3", "--inner-steps", "3", "--outer-lr", "0.2"]
QUIET = ["--eval-tasks", "1", "--no-progress", "--checkpoint-every", "1"]


def _params(out: Path) -> dict[str, torch.Tensor]:
    return latest_checkpoint(out / "checkpoints")[1]["params"]


def _train(out: Path, *argv: str) -> int:
    return main(["train", "sine", "--out", str(out), *QUIET, *argv])


@pytest.fixture
def reference(tmp_path) -> Path:
    out = tmp_path / "reference"
    assert _train(out, "--iterations", "4", *SETTINGS) == 0
    return out


def test_resume_reads_the_settings_back_and_ends_like_the_uninterrupted_run(reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--iterations", "4", *SETTINGS) == 0
    for p in sorted((out / "checkpoints").iterdir())[2:]:
        p.unlink()  # back to iteration 2
    (out / "metrics.csv").unlink()
    capsys.readouterr()
    assert _train(out, "--resume") == 0  # no setting retyped
    assert "resumed" in capsys.readouterr().err
    a, b = _params(reference), _params(out)
    assert all(b[k].dtype == torch.float64 and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flag, value", [("--dtype", "float32"), ("--schedule", "cycle"), ("--variant", "reptile"),
                                         ("--seed", "0"), ("--inner-lr", "0.05"), ("--no-anneal", None)])
def test_a_setting_that_changes_the_numbers_is_refused_on_resume(reference, flag, value, capsys):
    before = {p.name: p.read_bytes() for p in (reference / "checkpoints").iterdir()}
    capsys.readouterr()
    assert _train(reference, "--resume", "--iterations", "6", flag, *([value] if value else [])) == 1
    err = capsys.readouterr().err
    name = flag[2:].replace("-", "_")
    # the CLI names a parameter with an underscore by its flag (inner_lr -> --inner-lr; reptile.cli.parsing)
    assert any(f"cannot resume: the run was trained with other settings for {n}" in err for n in (name, flag)), err
    assert "--resume reads the settings back" in err
    assert {p.name: p.read_bytes() for p in (reference / "checkpoints").iterdir()} == before


def test_iterations_can_be_raised_and_the_note_says_the_schedule_follows(reference, capsys):
    capsys.readouterr()
    assert _train(reference, "--resume", "--iterations", "6") == 0
    err = capsys.readouterr().err
    assert "extending the run from 4 to 6 iterations" in err and "follows the new total" in err
    ckpt = latest_checkpoint(reference / "checkpoints")[1]
    assert ckpt["iteration"] == 6 and ckpt["config"]["iterations"] == 6


def test_iterations_cannot_be_lowered(reference, capsys):
    capsys.readouterr()
    assert _train(reference, "--resume", "--iterations", "3") == 1
    assert "iterations can only be raised" in capsys.readouterr().err


def test_extending_without_annealing_equals_the_longer_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(a, "--iterations", "5", "--no-anneal", "--hidden", "4") == 0
    assert _train(b, "--iterations", "3", "--no-anneal", "--hidden", "4") == 0
    assert _train(b, "--resume", "--iterations", "5") == 0
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_the_api_refuses_other_cli_settings_in_extra(tmp_path):
    model = MLP((1, 4, 1))
    x = torch.linspace(-1, 1, 10).reshape(5, 2, 1)

    def trainer(schedule: str, **cfg) -> MetaTrainer:
        return MetaTrainer(make_loss(model), params_of(model), lambda rng: (x, x), TrainConfig(**cfg), tmp_path / "r",
                           model_spec=model_spec(model), extra={"family": "sine", "args": {"schedule": schedule}})

    trainer("cycle", iterations=4, checkpoint_every=1).run(progress=False, until=2)
    with pytest.raises(ValueError, match=r"schedule \(saved 'cycle', now 'replacement'\)"):
        trainer("replacement", iterations=4, checkpoint_every=1).resume()
    t = trainer("cycle", iterations=8, checkpoint_every=1)
    assert t.resume() and t.iteration == 2
    assert any("from 4 to 8 iterations" in n for n in t.resume_notes)
    t.close()


def test_the_api_refuses_another_dtype(tmp_path):
    model = MLP((1, 4, 1))
    x = torch.linspace(-1, 1, 10).reshape(5, 2, 1)
    MetaTrainer(make_loss(model), params_of(model), lambda rng: (x, x), TrainConfig(iterations=2), tmp_path).run(
        progress=False)
    m64 = MLP((1, 4, 1)).double()
    t = MetaTrainer(make_loss(m64), params_of(m64), lambda rng: (x.double(), x.double()), TrainConfig(iterations=2),
                    tmp_path)
    with pytest.raises(ValueError, match="torch.float32.* parameters, this model .*float64"):
        t.resume()
    t.close()


def test_check_resume_settings_merges_and_refuses():
    saved = {"dtype": "float64", "iterations": 10, "no_anneal": False, "threads": 1, "device": "cpu"}
    r = check_resume_settings(saved, {"threads": 4, "iterations": 10, "new_flag": 1})
    assert r.settings == {**saved, "threads": 4, "new_flag": 1} and r.notes == []
    r = check_resume_settings(saved, {"iterations": 20}, reached=10)
    assert r.settings["iterations"] == 20 and "follows the new total" in r.notes[0]
    r = check_resume_settings({**saved, "no_anneal": True}, {"iterations": 20})
    assert "the same numbers as an uninterrupted 20-iteration run" in r.notes[0]
    r = check_resume_settings(saved, {"device": "cuda"})
    assert "up to rounding" in r.notes[0]
    with pytest.raises(ValueError, match=r"dtype \(saved 'float64', now 'float32'\)"):
        check_resume_settings(saved, {"dtype": "float32"})
    with pytest.raises(ValueError, match="iterations can only be raised"):
        check_resume_settings(saved, {"iterations": 5})
    with pytest.raises(ValueError, match="beyond 12"):
        check_resume_settings(saved, {"iterations": 12}, reached=15)


def test_explicit_options_are_the_typed_ones():
    from reptile.cli import build_parser
    parser = build_parser()
    given = explicit_options(parser, ["train", "sine", "--dtype", "float32", "--resume", "--out", "x"])
    assert {"dtype", "resume", "out", "family"} <= given and "schedule" not in given and "seed" not in given
    assert parser.parse_args(["train"]).dtype == "float32"  # the defaults are back


def test_settings_from_checkpoint_reads_family_and_args(reference):
    s = settings_from_checkpoint(latest_checkpoint(reference / "checkpoints")[1])
    assert s["family"] == "sine" and s["dtype"] == "float64" and s["schedule"] == "replacement"
    assert s["iterations"] == 4 and s["seed"] == 3
