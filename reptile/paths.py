"""Checks of output paths given on the command line, made before any work or any write.

A run that would only find out at its first checkpoint that ``--out`` cannot be created wastes
the work done until then; these checks fail at once, name the flag and say what to change.
"""
from __future__ import annotations

import os
from pathlib import Path


def _blocking_ancestor(path: Path, include_self: bool) -> tuple[Path | None, Path]:
    """``(a file among the ancestors of path, or None; the nearest existing folder)``."""
    full = path.absolute()
    for parent in ([full] if include_self else []) + list(full.parents):
        if parent.exists():
            return (None, parent) if parent.is_dir() else (parent, parent)
    return None, Path(path.absolute().anchor)


def check_output_dir(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Raise ``ValueError`` unless ``path`` is a folder or could be created as one; returns it.

    Nothing is created: a refused path leaves no trace.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    _check_parent(path, flag, include_self=True)
    return path


def check_output_file(path: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Raise ``ValueError`` unless a file could be written at ``path``; returns it. Nothing is created."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'out'}")
    _check_parent(path, flag, include_self=False)
    return path


def _check_parent(path: Path, flag: str, include_self: bool) -> None:
    blocker, nearest = _blocking_ancestor(path, include_self)
    if blocker is not None:
        raise ValueError(f"{flag} {path} cannot be created: {blocker} is a file, not a folder; "
                         f"choose another {flag}")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path} cannot be created: {nearest} is not writable; choose another {flag}")
