"""The notebooks: jupytext percent-format ``.py`` sources paired with executed ``.ipynb`` files.

The sources are what one edits (and what linters see); ``python notebooks/execute.py`` runs them and
writes the ``.ipynb`` with outputs, which are committed so the notebooks read on a code host. These
tests check that every source has its notebook, that the two agree cell by cell, that the stored
notebook carries outputs (a plot, no errors), that nothing walks up the tree to edit ``sys.path``, and
(slow) that every source runs top to bottom in a fresh kernel.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")


def test_there_are_at_least_three_notebooks() -> None:
    assert len(SOURCES) >= 3
    assert not (ROOT / "notebooks" / "build.py").exists(), "notebooks/build.py is replaced by the jupytext sources"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_source_and_notebook_are_paired_and_up_to_date(source: Path) -> None:
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `python notebooks/execute.py {source.name}`"
    stored = nbformat.read(ipynb, as_version=4)
    nbformat.validate(stored)
    text = jupytext.read(source)
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in text.cells], \
        f"{ipynb.name} differs from {source.name}: run `python notebooks/execute.py {source.name}`"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_stored_notebook_has_outputs_a_plot_and_no_errors(source: Path) -> None:
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{source.stem}.ipynb was not executed"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1, f"{source.stem}.ipynb has no plot"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_source_uses_the_installed_package(source: Path) -> None:
    text = source.read_text()
    assert "sys.path" not in text and "from figures" not in text, \
        f"{source.name} must import the installed package (reptile, analysis), not edit sys.path"


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A 'python3' kernelspec that runs *this* interpreter, found first on JUPYTER_PATH.

    So the notebooks execute with the test's own environment (the venv's ipykernel and the
    project), whatever kernels the user has installed; nothing is installed anywhere.
    """
    pytest.importorskip("ipykernel")
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    return "python3"


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_notebook_source_runs_top_to_bottom(source: Path, venv_kernel: str) -> None:
    nbclient = pytest.importorskip("nbclient")
    nb = jupytext.read(source)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=venv_kernel,
                                     resources={"metadata": {"path": str(source.parent)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1, f"{source.name} drew no plot"
