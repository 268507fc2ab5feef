"""Execute the notebooks' jupytext sources and write the paired ``.ipynb`` files with their outputs.

The ``.py`` files (jupytext percent format) are the sources: edit them, then run
``python notebooks/execute.py [NAME.py ...]`` from the repository root so that the committed
``.ipynb`` files carry fresh outputs and read on a code host without running. The notebooks import
the installed package (``pip install -e .[dev]``); nothing edits ``sys.path``. The tests execute the
sources the same way (tests/test_notebooks.py).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import jupytext
import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def execute(source: Path, kernel_name: str = "python3", timeout: int = 600) -> nbformat.NotebookNode:
    """Read a percent-format source, run every cell in a fresh kernel (cwd: the notebooks folder);
    return the notebook with outputs. Raises ``nbclient.exceptions.CellExecutionError`` naming the cell."""
    nb = jupytext.read(source)
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(source.parent)}}).execute()
    return nb


def main(argv: list[str]) -> int:
    sources = [HERE / a for a in argv] if argv else sorted(HERE.glob("[0-9][0-9]_*.py"))
    for src in sources:
        tic = time.perf_counter()
        nb = execute(src)
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        nbformat.write(nb, src.with_suffix(".ipynb"))
        print(f"wrote {src.with_suffix('.ipynb').name} ({time.perf_counter() - tic:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
