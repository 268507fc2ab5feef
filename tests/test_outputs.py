"""Where outputs go: fast/quick modes never touch the committed results, the profiler prints
nothing, and the suite keeps its caches out of the home folder."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: the committed result folders that a fast or quick run must leave exactly as they were
TRACKED_OUTPUTS = ["figures/out", "benchmarks/results"]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def _require_git_checkout() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        inside = _git("rev-parse", "--is-inside-work-tree").strip()
    except subprocess.CalledProcessError:
        inside = "false"
    if inside != "true":
        pytest.skip(f"{ROOT} is not a git checkout")
    if not _git("ls-files", *TRACKED_OUTPUTS).strip():
        pytest.skip("no committed results in this checkout")


def _status() -> str:
    """``git status`` of the result folders: modified, deleted and untracked files (ignored ones excluded)."""
    return _git("status", "--porcelain", "--untracked-files=all", "--", *TRACKED_OUTPUTS)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "USDT" not in proc.stderr, "torch profiler noise on stderr"
    return proc


@pytest.fixture
def scratch_cleanup():
    """Remove the scratch folders afterwards if this test created them (a user's are left alone)."""
    from benchmarks.run import QUICK_RESULTS
    from figures.style import FAST_OUT

    existed = {p: p.exists() for p in (FAST_OUT, QUICK_RESULTS)}
    yield existed
    for p, was in existed.items():
        if not was:
            shutil.rmtree(p, ignore_errors=True)


def test_fast_figures_leave_the_committed_figures_alone(scratch_cleanup):
    """``python -m figures --fast`` (no --out) writes into the git-ignored ``figures/out/fast/``.

    One cheap figure (``coefficients``, a few seconds); the output folder is chosen by
    ``figures.__main__`` and ``figures.style.save`` the same way for every figure.
    """
    _require_git_checkout()
    from figures.style import FAST_OUT

    before = _status()
    _run(["-m", "figures", "--fast", "--only", "coefficients"], timeout=600)
    assert _status() == before
    assert (FAST_OUT / "coefficients.png").exists()
    assert not _git("status", "--porcelain", "--", str(FAST_OUT)).strip()  # ignored, not untracked


def test_quick_benchmarks_leave_the_committed_results_alone(scratch_cleanup):
    """``python -m benchmarks --quick`` (no --out) writes into the git-ignored ``benchmarks/results/quick/``.

    The cheapest suite with one repeat: it writes the results CSV and machine JSON as every suite does.
    """
    _require_git_checkout()
    from benchmarks.run import QUICK_RESULTS

    before = _status()
    _run(["-m", "benchmarks", "--quick", "--only", "avggradinner", "--repeats", "1"], timeout=600)
    assert _status() == before
    # a partial run (--only) is tagged with its suites, so it never replaces a full table
    assert (QUICK_RESULTS / "results-quick-avggradinner.csv").exists()
    assert (QUICK_RESULTS / "machine-quick-avggradinner.json").exists()
    assert not _git("status", "--porcelain", "--", str(QUICK_RESULTS)).strip()


def test_output_folders_default_to_scratch_in_fast_and_quick_modes(tmp_path, monkeypatch):
    from benchmarks import run
    from figures import common, style

    assert run.parse(["--quick"]).out == run.QUICK_RESULTS
    assert run.parse([]).out == run.RESULTS
    assert run.parse(["--quick", "--out", str(tmp_path)]).out == tmp_path
    # the HVP benchmark is a subprocess with its own default: it must be told where to write
    cmd = run.hvp_command(True, 1, run.QUICK_RESULTS)
    assert cmd[cmd.index("--out") + 1] == str(run.QUICK_RESULTS / "bench_hvp.csv")
    assert common.parse("x", ["--fast"]).out == style.FAST_OUT
    assert common.parse("x", []).out == style.DEFAULT_OUT
    # a figure's main(fast=True) called from Python without ``out`` goes to the scratch folder too
    import matplotlib.pyplot as plt
    import pandas as pd

    monkeypatch.setattr(style, "FAST_OUT", tmp_path / "fast")
    monkeypatch.setattr(style, "DEFAULT_OUT", tmp_path / "full")
    fig, ax = style.figure()
    paths = style.save(fig, pd.DataFrame({"x": [1]}), "probe", None, common.note(True, "scale"))
    assert all(p.parent == tmp_path / "fast" for p in paths)
    fig, ax = style.figure()
    paths = style.save(fig, pd.DataFrame({"x": [1]}), "probe", None, common.note(False, "scale"))
    assert all(p.parent == tmp_path / "full" for p in paths)
    plt.close("all")


def test_gitignore_of_the_figures_matches_what_is_tracked():
    """PDFs are rebuilt, never committed; the scratch folders are ignored."""
    _require_git_checkout()
    assert not [f for f in _git("ls-files", "figures/out").split() if f.endswith(".pdf")]
    for path in ("figures/out/x.pdf", "figures/out/fast/sine.png", "benchmarks/results/quick/results-quick.csv"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path


def test_peak_alloc_bytes_is_silent_and_measures(capfd):
    import torch

    from reptile.profiling import peak_alloc_bytes

    def fn():
        x = torch.ones(250_000)  # 1 MB of float32
        del x
        print("fn's own output", file=sys.stderr)

    peak = peak_alloc_bytes(fn)
    out, err = capfd.readouterr()
    assert peak >= 1_000_000
    assert "USDT" not in err and "profiler_" not in err
    assert "fn's own output" in err  # only the profiler's start and stop are silenced


def test_the_suite_uses_a_temporary_cache():
    """tests/conftest.py points ``$REPTILE_CACHE`` at a session folder: nothing lands in ~/.cache."""
    from reptile.data.glyphs import default_cache_dir

    cache = default_cache_dir().resolve()
    assert os.environ.get("REPTILE_CACHE")
    assert not cache.is_relative_to(Path("~/.cache").expanduser().resolve())


def test_manifold_benchmark_writes_into_the_folder_it_is_given(tmp_path, monkeypatch):
    """``bench_manifolds`` alone: its CSV defaults to the scratch folder in quick mode; under
    ``python -m benchmarks --out DIR`` it writes ``DIR/bench_manifolds.csv`` (the suite itself is
    replaced by two fake rows: only where the file goes is tested)."""
    from benchmarks import bench_manifolds, run

    assert bench_manifolds.parse(["--quick"]).out == run.QUICK_RESULTS / "bench_manifolds.csv"
    assert bench_manifolds.parse([]).out == run.RESULTS / "bench_manifolds.csv"
    assert bench_manifolds.parse(["--quick", "--out", str(tmp_path / "m.csv")]).out == tmp_path / "m.csv"
    fake = [{"suite": "manifolds", "candidate": c, "cpu_ms": 1.0} for c in ("lbfgs", "certified")]
    monkeypatch.setattr(bench_manifolds, "run", lambda *a, **k: fake)
    assert run.main(["--quick", "--only", "manifolds", "--out", str(tmp_path / "q")]) == 0
    import pandas as pd
    assert pd.read_csv(tmp_path / "q" / "bench_manifolds.csv").candidate.tolist() == ["lbfgs", "certified"]
    assert (tmp_path / "q" / "results-quick-manifolds.csv").exists()  # partial runs are tagged with their suites


def test_figures_and_benchmarks_share_the_threads_flag(capsys):
    """``--threads`` of figures and benchmarks is the shared flag (reptile.cli.argtypes): checked
    against the CPUs available, default None (the policy of reptile.threads.apply_threads)."""
    from benchmarks import bench_manifolds, run
    from figures import __main__ as figures_main
    from figures import common

    assert run.parse([]).threads is None and common.parse("x", []).threads is None
    assert bench_manifolds.parse(["--threads", "1"]).threads == 1
    for parse in (run.parse, lambda a: common.parse("x", a), bench_manifolds.parse, figures_main.main):
        with pytest.raises(SystemExit):
            parse(["--threads", "100000"])
        assert "CPUs available" in capsys.readouterr().err
