"""Every figure builds in fast mode and writes a non-empty PNG, PDF and CSV of its numbers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from figures.__main__ import FIGURES, OPTIONAL, load  # noqa: E402


def _available() -> list[str]:
    names = []
    for name in FIGURES:
        if name in OPTIONAL and not (ROOT / "figures" / f"{name}.py").exists():
            continue
        names.append(name)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", _available())
def test_figure_builds_in_fast_mode(name: str, tmp_path: Path) -> None:
    main = load(name)
    if main is None:
        pytest.skip(f"figures/{name}.py has no main(fast, out)")
    paths = [Path(p) for p in main(fast=True, out=tmp_path)]
    for ext in ("png", "pdf"):
        f = tmp_path / f"{name}.{ext}"
        assert f.exists() and f.stat().st_size > 1000, f"{f} missing or empty"
    csv = tmp_path / f"{name}.csv"
    if name not in OPTIONAL:  # our own figures always write their numbers
        assert csv in paths
        assert csv.exists() and len(pd.read_csv(csv)) > 0, f"{csv} missing or empty"
    assert all(p.exists() for p in paths)


def test_style_is_headless_and_paper_sized() -> None:
    import matplotlib

    from figures import style

    assert matplotlib.get_backend().lower() == "agg"
    assert style.label("reptile", 5) == "Reptile (k=5)"
    assert style.label("fomaml_shared", 4) == "FOMAML, shared tail (k=4)"
    fig, axes = style.figure(ncols=3)
    assert abs(fig.get_size_inches()[0] - style.PAGE) < 1e-9 and axes.shape == (1, 3)


def test_every_listed_figure_has_a_fast_and_full_mode() -> None:
    for name in _available():
        if name in OPTIONAL:
            continue
        src = (ROOT / "figures" / f"{name}.py").read_text()
        assert '"full"' in src and '"fast"' in src, f"figures/{name}.py needs fast and full settings"
        assert "def main(fast: bool = False, out" in src


def test_build_all_command_lists_figures() -> None:
    out = subprocess.run([sys.executable, "-m", "figures", "--list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == FIGURES


def test_build_all_reports_a_failing_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import figures.__main__ as runner

    def boom(fast: bool, out: Path) -> list[Path]:
        raise RuntimeError("broken figure")

    monkeypatch.setattr(runner, "load", lambda name: boom)
    results = runner.build(["sine"], fast=True, out=tmp_path)
    assert isinstance(results["sine"], str) and "broken figure" in results["sine"]
