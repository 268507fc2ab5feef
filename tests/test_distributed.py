"""torch.distributed: tasks of a meta-batch split across ranks give the parameters of one process."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist

from reptile import distributed
from reptile.checkpoint import latest_checkpoint
from reptile.cli import main
from reptile.train import TrainConfig

TRAIN = ["train", "sine", "--hidden", "16,16", "--meta-batch", "5", "--iterations", "6", "--checkpoint-every", "3",
         "--log-every", "1", "--eval-tasks", "2", "--no-progress"]


def test_task_slices_partition_the_meta_batch():
    for m in range(1, 10):
        for w in range(1, m + 1):
            slices = [distributed.task_slice(m, r, w) for r in range(w)]
            assert [j for s in slices for j in s] == list(range(m))
            assert max(map(len, slices)) - min(map(len, slices)) <= 1
    with pytest.raises(ValueError, match="cannot be split"):
        distributed.task_slice(2, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        distributed.task_slice(4, 2, 2)


def test_persistent_adam_moments_are_refused_across_ranks():
    cfg = TrainConfig(inner_optimizer="adam", inner_lr=1e-3, meta_batch=4)
    distributed.check_config(cfg, 1)  # one process: fine
    with pytest.raises(ValueError, match="reset-inner-state"):
        distributed.check_config(cfg, 2)
    distributed.check_config(TrainConfig(inner_optimizer="adam", inner_lr=1e-3, meta_batch=4,
                                         reset_inner_state=True), 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_reduce_sum_keeps_keys_shapes_and_dtypes():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        tree = {"a.w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1.5], dtype=torch.float64)}
        out = distributed.all_reduce_sum(tree)
        assert list(out) == ["a.w", "b"] and out["a.w"].shape == (2, 3) and out["b"].dtype == torch.float64
        assert torch.equal(out["a.w"], tree["a.w"]) and torch.equal(out["b"], tree["b"])
    finally:
        dist.destroy_process_group()


def _torchrun(out: Path, *extra: str, timeout: float = 240) -> None:
    """``torchrun --nproc_per_node=2 -m reptile train ...`` on a free port; its whole process group is
    killed if it fails or hangs."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "reptile", *TRAIN,
           "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, log.decode()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks are in this session's group
            proc.wait()


def _params(out: Path, iteration: int) -> dict[str, torch.Tensor]:
    path, ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt["iteration"] == iteration, path
    return ckpt["params"]


@pytest.mark.timeout(300)
def test_two_gloo_ranks_match_one_process_and_resume(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main([*TRAIN, "--out", str(single)]) == 0
    _torchrun(multi)  # 5 tasks per meta-batch: rank 0 computes 3, rank 1 computes 2
    a, b = _params(single, 6), _params(multi, 6)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    # only rank 0 wrote metrics: every row once, with the losses of the whole meta-batch
    ms, mm = (pd.read_csv(d / "metrics.csv") for d in (single, multi))
    assert not mm.duplicated(["iteration", "metric"]).any()
    loss = lambda m: m[m.metric.str.startswith("loss")].reset_index(drop=True)
    assert loss(ms)[["iteration", "metric"]].equals(loss(mm)[["iteration", "metric"]])
    assert (loss(ms).value - loss(mm).value).abs().max() < 1e-5

    # resume: drop the last checkpoint, both ranks continue from iteration 3 and end where one process did
    latest_checkpoint(multi / "checkpoints")[0].unlink()
    assert latest_checkpoint(multi / "checkpoints")[1]["iteration"] == 3
    _torchrun(multi, "--resume")
    c = _params(multi, 6)
    for k in a:
        torch.testing.assert_close(c[k], a[k], rtol=0, atol=1e-6)
    assert not pd.read_csv(multi / "metrics.csv").duplicated(["iteration", "metric"]).any()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the rank processes through /proc")
def test_a_dead_rank_ends_the_run_with_an_error_and_it_resumes(tmp_path):
    import time
    args = [*TRAIN, "--hidden", "8,8"]
    args[args.index("--iterations") + 1] = "600"
    args[args.index("--checkpoint-every") + 1] = "10"
    single, multi = tmp_path / "single", tmp_path / "multi"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "reptile", *args, "--out", str(multi)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        t0 = time.time()
        while latest_checkpoint(multi / "checkpoints") is None and proc.poll() is None and time.time() - t0 < 120:
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) == 2 and proc.poll() is None, "the run ended before a rank could be killed"
        os.kill(max(workers), signal.SIGKILL)      # one rank dies mid-training
        log, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0               # the whole run stops, it does not hang or pretend success
        assert b"exitcode" in log and b"-9" in log, log.decode()[-3000:]  # torchrun names the dead rank's signal
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stopped = latest_checkpoint(multi / "checkpoints")[1]["iteration"]
    assert 0 < stopped < 600
    _torchrun(multi, "--hidden", "8,8", "--iterations", "600", "--checkpoint-every", "10", "--resume")
    assert main([*args, "--out", str(single)]) == 0
    a, b = _params(single, 600), _params(multi, 600)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
