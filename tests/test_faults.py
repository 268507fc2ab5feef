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

from child_signals import default_sigint
from reptile.checkpoint import atomic_write_bytes, latest_checkpoint, list_checkpoints, save_checkpoint

ARGS = ["train", "sine", "--iterations", "2000", "--checkpoint-every", "20", "--log-every", "10",
        "--hidden", "8,8", "--eval-tasks", "2", "--no-progress"]


#: hang guards only: every wait below ends on an event (a checkpoint file, the process's exit) long
#: before these; measured at load 8-14 on 2 cores: first checkpoint about 40 s, exit after SIGINT
#: about 10 s, a whole 2000-iteration run several minutes
START_DEADLINE_S, EXIT_DEADLINE_S, RUN_DEADLINE_S = 600.0, 300.0, 1800.0


def _start(out: Path, resume: bool = False, iterations: int | None = None) -> subprocess.Popen:
    """``reptile train`` in a subprocess; its stdout and stderr go to files beside ``out`` (never to
    pipes that nobody reads while it runs, which could fill up and block it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = list(ARGS)
    if iterations is not None:
        args[args.index("--iterations") + 1] = str(iterations)
    cmd = [sys.executable, "-m", "reptile", *args, "--out", str(out)] + (["--resume"] if resume else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.stdout", "ab") as so, open(f"{out}.stderr", "ab") as se:
        return subprocess.Popen(cmd, stdout=so, stderr=se, env=env, preexec_fn=default_sigint)


def _stderr(out: Path) -> str:
    return Path(f"{out}.stderr").read_text(errors="replace")


def _newest_iteration(out: Path) -> int:
    found = list_checkpoints(out / "checkpoints")
    return int(found[-1].stem.split("-")[-1]) if found else -1


def _wait_for_new_checkpoint(out: Path, proc: subprocess.Popen, after: int) -> int:
    """Wait until the trainer writes a checkpoint of an iteration above ``after``; returns it.

    That file is the event that proves the training loop runs (past start-up, resume and the
    before-training evaluation), where an interrupt is handled by writing a checkpoint. A signal
    sent earlier lands in start-up, where its outcome is undefined (seen at load 8-14: death by
    SIGINT, an abort inside torch's import, exit 1 from a half-imported scipy, exit 130 from the
    before-training evaluation without the "interrupted at iteration" line, and once a run that
    trained on); the old version of this wait returned quietly after 60 s and then sent its SIGINT
    into start-up on a loaded machine. Fails the test if the process exits first or the hang guard
    passes.
    """
    t0 = time.monotonic()
    while (newest := _newest_iteration(out)) <= after:
        if proc.poll() is not None:
            pytest.fail(f"reptile train exited with {proc.returncode} before writing a checkpoint past "
                        f"iteration {after}:\n{_stderr(out)[-3000:]}")
        if time.monotonic() - t0 > START_DEADLINE_S:
            proc.kill()
            pytest.fail(f"no checkpoint past iteration {after} after {START_DEADLINE_S:.0f} s (hang guard):\n"
                        f"{_stderr(out)[-3000:]}")
        time.sleep(0.05)
    return newest


def _wait_for_exit(out: Path, proc: subprocess.Popen, deadline: float = EXIT_DEADLINE_S) -> int:
    """The exit code; fails the test (with the run's stderr) if the process has not exited by the hang guard."""
    try:
        return proc.wait(timeout=deadline)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"reptile train still running after {deadline:.0f} s (hang guard):\n{_stderr(out)[-3000:]}")


def _final_params(out: Path) -> dict[str, torch.Tensor]:
    path, ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt["iteration"] == 2000, path
    return ckpt["params"]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_identical_parameters(tmp_path):
    reference = tmp_path / "reference"
    proc = _start(reference)
    try:
        assert _wait_for_exit(reference, proc, RUN_DEADLINE_S) == 0, _stderr(reference)
    finally:
        proc.kill()
    rng = np.random.default_rng(7)
    run, kills = tmp_path / "killed", 0
    for attempt in range(3):  # three random kill points, each after this attempt's training loop has started
        proc = _start(run, resume=attempt > 0)
        try:
            _wait_for_new_checkpoint(run, proc, after=_newest_iteration(run))
            time.sleep(float(rng.uniform(0.0, 0.3)))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            _wait_for_exit(run, proc)
        finally:
            proc.kill()
    assert kills >= 3, "training finished before it could be killed three times; make it longer"
    proc = _start(run, resume=True)
    try:
        assert _wait_for_exit(run, proc, RUN_DEADLINE_S) == 0, _stderr(run)
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
        first = _wait_for_new_checkpoint(out, proc, after=-1)  # the training loop runs
        proc.send_signal(signal.SIGINT)
        assert _wait_for_exit(out, proc) == 130, _stderr(out)
        err = _stderr(out)
    finally:
        proc.kill()
    import re
    found = re.search(r"interrupted at iteration (\d+)", err)
    assert found, err
    stopped = int(found[1])
    assert stopped >= first
    path, ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt["iteration"] == stopped  # written at the interrupt, not only on the 20-iteration schedule


def test_the_trainer_child_gets_a_working_sigint_even_when_the_suite_ignores_it():
    """The cause of the old ``TimeoutExpired``: a SIGINT ignored by whoever started the suite is
    inherited, and a Python child started with it ignored never raises KeyboardInterrupt."""
    probe = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"]
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `./scripts/test.sh &`
    try:
        inherited = subprocess.run(probe, capture_output=True, text=True, timeout=60).stdout.strip()
        restored = subprocess.run(probe, capture_output=True, text=True, timeout=60,
                                  preexec_fn=default_sigint).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, old)
    assert (inherited, restored) == ("False", "True")


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
