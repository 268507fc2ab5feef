"""Issue 18 items 1 and 2: a run folder is never lost and has one writer.

Refusals leave every byte of the folder as it was (compared with a digest of each file).
The concurrency tests start real ``reptile train`` processes.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reptile import MLP, MetaTrainer, TrainConfig, make_loss, params_of
from reptile.checkpoint import MAGIC, list_checkpoints, load_checkpoint
from reptile.cli import main

SINE = ["--hidden", "4", "--eval-tasks", "1", "--no-progress"]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


def _train(out: Path, *extra: str, iterations: int = 3) -> int:
    return main(["train", "sine", "--iterations", str(iterations), "--checkpoint-every", "1", "--out", str(out),
                 *SINE, *extra])


@pytest.fixture
def finished_run(tmp_path) -> Path:
    out = tmp_path / "run"
    assert _train(out) == 0
    return out


def _damage_all(out: Path) -> None:
    for p in list_checkpoints(out / "checkpoints"):  # a newer format version: unreadable here
        p.write_bytes(p.read_bytes().replace(MAGIC + b"1", MAGIC + b"9", 1))


def test_resume_over_unreadable_checkpoints_is_refused_and_changes_nothing(finished_run, capsys):
    _damage_all(finished_run)
    before = _digests(finished_run)
    capsys.readouterr()
    assert _train(finished_run, "--resume") == 1
    err = capsys.readouterr().err
    assert "none of the 3 checkpoint(s)" in err and "format v9" in err and "move them away" in err
    assert _digests(finished_run) == before


def test_fresh_start_over_unreadable_checkpoints_is_refused_and_changes_nothing(finished_run, capsys):
    _damage_all(finished_run)
    before = _digests(finished_run)
    capsys.readouterr()
    assert _train(finished_run) == 1
    assert "already holds 3 checkpoint(s)" in capsys.readouterr().err
    assert _digests(finished_run) == before


def test_a_foreign_folder_with_checkpoints_and_metrics_is_refused(tmp_path, capsys):
    out = tmp_path / "other-tool"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "ckpt-00000007.pt").write_bytes(b"another tool's weights")
    (out / "metrics.csv").write_text("step,loss\n1,0.5\n")
    before = _digests(out)
    for resume in ([], ["--resume"]):
        capsys.readouterr()
        assert _train(out, *resume) == 1
        err = capsys.readouterr().err
        assert "not a reptile-lab run folder" in err and "ckpt-00000007.pt" in err
        assert _digests(out) == before


def test_a_non_empty_foreign_folder_is_refused_by_the_api(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    model = MLP((1, 4, 1))
    x = torch.zeros(5, 2, 1)
    t = MetaTrainer(make_loss(model), params_of(model), lambda rng: (x, x), TrainConfig(iterations=2), out)
    with pytest.raises(ValueError, match="not a reptile-lab run folder"):
        t.run(progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_a_run_folder_from_before_the_marker_still_resumes(finished_run, capsys):
    (finished_run / ".reptile-lab-run").unlink()
    assert _train(finished_run, "--resume", "--iterations", "4") == 0
    assert "resumed" in capsys.readouterr().err
    assert (finished_run / ".reptile-lab-run").is_file()


def test_pruning_keeps_this_run_s_checkpoints_beside_a_damaged_later_one(tmp_path):
    model = MLP((1, 4, 1))
    x = torch.linspace(-1, 1, 10).reshape(5, 2, 1)
    cfg = dict(iterations=6, checkpoint_every=1, keep_checkpoints=1)
    out = tmp_path / "run"
    MetaTrainer(make_loss(model), params_of(model), lambda rng: (x, x), TrainConfig(**cfg), out).run(
        progress=False, until=2)
    late = out / "checkpoints" / "ckpt-00000099.pt"  # later than anything this run will write, unreadable
    late.write_bytes(b"not a checkpoint")
    t = MetaTrainer(make_loss(model), params_of(model), lambda rng: (x, x), TrainConfig(**cfg), out)
    assert t.resume() and t.iteration == 2
    t.run(progress=False)
    names = sorted(p.name for p in list_checkpoints(out / "checkpoints"))
    assert names == ["ckpt-00000006.pt", "ckpt-00000099.pt"]
    assert load_checkpoint(out / "checkpoints" / "ckpt-00000006.pt")["iteration"] == 6
    assert late.read_bytes() == b"not a checkpoint"


def test_a_failed_fresh_start_leaves_no_folder_behind(tmp_path):
    model = MLP((1, 4, 1))
    x = torch.zeros(5, 2, 1)

    def broken(rng):
        raise RuntimeError("sampler failed")

    out = tmp_path / "new"
    with pytest.raises(RuntimeError, match="sampler failed"):
        MetaTrainer(make_loss(model), params_of(model), broken, TrainConfig(iterations=2), out).run(progress=False)
    assert not out.exists()


# ------------------------------------------------------------------------------ one writer
LONG = ["train", "sine", "--iterations", "1000000", "--checkpoint-every", "5", "--log-every", "1", "--hidden", "8,8",
        "--eval-tasks", "1", "--no-progress"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "reptile", *LONG, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not list_checkpoints(out / "checkpoints"):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() - t0 < timeout, "no checkpoint was written in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_killed_one_releases_the_folder(tmp_path):
    out = tmp_path / "run"
    first = _start(out)
    try:
        _wait_for_checkpoint(out, first)
        for extra in (["--resume"], []):  # a resume while it trains, and a second fresh run
            second = _start(out, *extra)
            try:
                assert second.wait(timeout=120) == 1
                err = second.stderr.read().decode()
            finally:
                second.kill()
            assert "another process is writing to the run folder" in err or "already holds" in err, err
            assert "Traceback" not in err
        second = _start(out, "--resume")
        try:
            assert second.wait(timeout=120) == 1
            assert "another process is writing to the run folder" in second.stderr.read().decode()
        finally:
            second.kill()
        assert first.poll() is None, "the first writer must keep training"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        first.kill()
    # the operating system released the lock of the killed process: the run can be continued
    from reptile.runfolder import RunFolder
    with RunFolder(out):
        pass
    model = MLP((1, 8, 8, 1))
    t = MetaTrainer(make_loss(model), params_of(model), lambda rng: None, TrainConfig(iterations=10 ** 6), out)
    assert t.folder is not None
    t.open_run_folder()
    t.close()


@pytest.mark.slow
def test_two_fresh_runs_on_one_folder_one_is_refused(tmp_path):
    out = tmp_path / "run"
    a, b = _start(out), _start(out)
    try:
        done, t0 = None, time.time()
        while done is None:  # the one that came second gives up at once
            done = next((p for p in (a, b) if p.poll() is not None), None)
            assert time.time() - t0 < 120, "neither process was refused"
            time.sleep(0.05)
        err = done.stderr.read().decode()
        assert done.returncode == 1, err
        assert "another process is writing to the run folder" in err or "already holds" in err, err
        other = b if done is a else a
        _wait_for_checkpoint(out, other)
        assert other.poll() is None
    finally:
        a.kill()
        b.kill()
        a.wait()
        b.wait()
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == len(set(rows)), "metrics.csv holds duplicated rows"
