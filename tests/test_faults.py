"""Faults: SIGKILL at random points and SIGINT during `reptile train`, then resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reptile.checkpoint import atomic_write_bytes, latest_checkpoint, list_checkpoints, save_checkpoint

ARGS = ["train", "sine", "--iterations", "2000", "--checkpoint-every", "20", "--log-every", "10",
        "--hidden", "8,8", "--eval-tasks", "2", "--no-progress"]


def _start(out: Path, resume: bool = False, iterations: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = list(ARGS)
    if iterations is not None:
        args[args.index("--iterations") + 1] = str(iterations)
    cmd = [sys.executable, "-m", "reptile", *args, "--out", str(out)] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while not list_checkpoints(out / "checkpoints"):
        if proc.poll() is not None or time.time() - t0 > timeout:
            return
        time.sleep(0.05)


def _final_params(out: Path) -> dict[str, torch.Tensor]:
    path, ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt["iteration"] == 2000, path
    return ckpt["params"]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_identical_parameters(tmp_path):
    reference = tmp_path / "reference"
    proc = _start(reference)
    try:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
    rng = np.random.default_rng(7)
    run, kills = tmp_path / "killed", 0
    for attempt in range(3):  # three random kill points, each after training has started
        proc = _start(run, resume=attempt > 0)
        try:
            _wait_for_checkpoint(run, proc)
            time.sleep(float(rng.uniform(0.0, 0.3)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert kills >= 3, "training finished before it could be killed three times; make it longer"
    proc = _start(run, resume=True)
    try:
        assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    finally:
        proc.kill()
    a, b = _final_params(reference), _final_params(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the metrics file holds every logged iteration exactly once, as in the uninterrupted run
    import pandas as pd
    ma, mb = (pd.read_csv(d / "metrics.csv") for d in (reference, run))
    key = ["iteration", "metric"]
    assert ma[key].equals(mb[key])


@pytest.mark.slow
def test_sigint_writes_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, iterations=10**6)  # far more than it can do before the signal arrives
    try:
        _wait_for_checkpoint(out, proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
    import re
    stopped = int(re.search(r"interrupted at iteration (\d+)", err)[1])
    path, ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt["iteration"] == stopped  # written at the interrupt, not only on the 20-iteration schedule


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "ckpt-00000001.pt"
    save_checkpoint(target, {"iteration": 1})
    before = target.read_bytes()

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # the data reaches the disk at fsync: fail there
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"x" * 100_000)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    save_checkpoint(tmp_path / "ckpt-00000010.pt", {"iteration": 10})
    save_checkpoint(tmp_path / "ckpt-00000020.pt", {"iteration": 20})
    p = tmp_path / "ckpt-00000020.pt"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.warns(UserWarning, match="damaged"):
        path, ckpt = latest_checkpoint(tmp_path)
    assert ckpt["iteration"] == 10
