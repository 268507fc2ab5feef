"""Writing report files atomically: each file is written to a temporary name in the same folder
and then renamed over the target (``os.replace``), so a crash or an interrupt leaves either the
old file or the complete new one, never half a file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd


def write_atomic(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` to produce the file, then rename it to ``path``; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def prepare_outputs(folder: str | os.PathLike, names: Sequence[str]) -> Path:
    """Before a long run writes ``names`` into ``folder``: fail now if it could not, and remove old copies.

    Creates ``folder`` if needed, checks that a file can be created in it (a temporary is made and
    removed) and that no name is taken by a folder, then deletes the previous run's files of
    those names, so an interrupted run leaves no stale report beside the new data.

    Raises:
        ValueError: naming the path that cannot be written and what to change.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"cannot write into the report folder {folder}: {e.strerror or e}; choose another "
                         f"--out") from None
    for name in names:
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            raise ValueError(f"cannot write the report file {target}: a folder has that name; move it away or "
                             f"choose another --out")
        if target.exists() and not os.access(target, os.W_OK) and not os.access(folder, os.W_OK):
            raise ValueError(f"cannot replace the report file {target}: not writable; choose another --out")
    for name in names:
        try:
            (folder / name).unlink(missing_ok=True)
        except OSError as e:
            raise ValueError(f"cannot remove the previous {folder / name}: {e.strerror or e}; choose another "
                             f"--out") from None
    return folder


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    return write_atomic(path, w)


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    return write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a ``matplotlib.figure.Figure`` as PNG atomically."""
    return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
