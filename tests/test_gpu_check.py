"""scripts/gpu_check.sh on a machine without CUDA says so and exits 0 (on a GPU machine: skipped here,
the script itself is the check)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_gpu_check_without_cuda_says_so_and_exits_0():
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU available" in proc.stdout


def test_gpu_benchmark_refuses_a_missing_device(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    from benchmarks.bench_gpu import main
    assert main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
