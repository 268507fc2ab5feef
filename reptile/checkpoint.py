"""Checkpoints that are never half-written, never execute code, and say what they hold.

File format: the magic line ``REPTILE-LAB-CKPT v<N>\\n``, the SHA-256 of the payload in hex and a
newline, then the payload: ``torch.save`` of a dict of tensors and plain values, loaded back with
``weights_only=True`` (a pickle that tries to run code is refused). Writes go to a temporary file
in the same folder, are fsynced and then renamed over the target, so a reader sees the old file
or the new one, never a mix.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
MAGIC = b"REPTILE-LAB-CKPT v"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another format version, or of another model."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace`` (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}; nothing was changed "
                               f"(the previous file, if any, is intact)") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically save ``payload`` (tensors, dicts, lists, numbers, strings) with version and checksum."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = MAGIC + str(FORMAT_VERSION).encode() + b"\n" + hashlib.sha256(body).hexdigest().encode() + b"\n"
    atomic_write_bytes(path, header + body)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a reptile-lab checkpoint, another format version, checksum mismatch
            (truncated or corrupted), or a payload that is not plain data (refused by
            ``weights_only=True``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a reptile-lab checkpoint (no '{MAGIC.decode()}' header); "
                              f"checkpoints are written by `reptile train`")
    try:
        version_line, digest, body = raw[len(MAGIC):].split(b"\n", 2)
        version = int(version_line)
    except ValueError as e:
        raise CheckpointError(f"{path} has a malformed header; the file is corrupt") from e
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format v{version}; this reptile-lab reads v{FORMAT_VERSION}")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError(f"{path} fails its checksum: the file is truncated or corrupted; "
                              f"use an earlier checkpoint")
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError and others for unsafe payloads
        # torch's own message suggests weights_only=False: the one thing not to do with an unknown file
        msg = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        reason = (f"it names {found[1]}, which is not allowed" if found else
                  (re.search(r"Unsupported operand \d+", msg) or [f"{type(e).__name__}"])[0])
        raise CheckpointError(f"{path} holds objects other than tensors and plain values (refused by "
                              f"weights_only=True, nothing in it was run: {reason}); it was not written "
                              f"by reptile-lab, or was tampered with; do not load it with weights_only=False "
                              f"unless you trust its source") from e
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not the dict `reptile train` writes; "
                              f"it was not written by reptile-lab")
    return payload


_CKPT = re.compile(r"^ckpt-(\d+)\.pt$")


def checkpoint_path(directory: str | Path, iteration: int) -> Path:
    return Path(directory) / f"ckpt-{iteration:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if _CKPT.match(p.name)), key=lambda p: int(_CKPT.match(p.name)[1]))


def latest_checkpoint(directory: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``directory`` that loads and verifies, or ``None`` if there is none.

    A newer file that fails verification is skipped with a warning naming it, so a damaged newest
    checkpoint never loses the run.
    """
    for p in reversed(list_checkpoints(directory)):
        try:
            return p, load_checkpoint(p)
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    for p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or the newest good checkpoint of a run folder (``RUN/checkpoints/``)."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in {path} (expected {path}/checkpoints/ckpt-*.pt)")
        return found
    return path, load_checkpoint(path)
