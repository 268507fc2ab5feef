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
_MAX_LINE = 80  # header lines: the version number, 64 hex digits of SHA-256


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
    with open(path, "rb") as f:  # the header first: a large file that is not a checkpoint is never read whole
        head = f.read(len(MAGIC))
        if head != MAGIC:
            raise CheckpointError(f"{path} is not a reptile-lab checkpoint (no '{MAGIC.decode()}' header); "
                                  f"checkpoints are written by `reptile train`")
        version_line, digest = f.readline(_MAX_LINE), f.readline(_MAX_LINE)
        try:
            if not (version_line.endswith(b"\n") and digest.endswith(b"\n")) or len(digest) != 65:
                raise ValueError("header lines")
            version, digest = int(version_line), digest[:-1]
        except ValueError as e:
            raise CheckpointError(f"{path} has a malformed header; the file is corrupt") from e
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path} has checkpoint format v{version}; this reptile-lab reads "
                                  f"v{FORMAT_VERSION}")
        body = f.read()
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


def latest_checkpoint(directory: str | Path, validate: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``directory`` that loads and verifies, or ``None`` if there is none.

    A newer file that fails verification is skipped with a warning naming it, so a damaged newest
    checkpoint never loses the run. ``validate``: also check the payload (:func:`validate_checkpoint`:
    a training checkpoint with finite parameters).
    """
    for p in reversed(list_checkpoints(directory)):
        try:
            return p, (load_training_checkpoint(p) if validate else load_checkpoint(p))
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    for p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)


def resolve_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint file, or the newest good checkpoint of a run folder (``RUN/checkpoints/``).

    The payload is validated (:func:`validate_checkpoint`) before it is returned.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path / "checkpoints", validate=True) or latest_checkpoint(path, validate=True)
        if found is None:
            raise FileNotFoundError(f"no checkpoint in {path} that can be used (expected {path}/checkpoints/ckpt-*.pt)")
        return found
    return path, load_training_checkpoint(path)


# ------------------------------------------------------------------- validation of the payload
#: top-level keys of a training checkpoint (``MetaTrainer.state_dict``)
CHECKPOINT_KEYS = frozenset({"format", "iteration", "params", "inner_state", "outer_state", "config",
                             "model_spec", "extra", "torch_version"})
_PLAIN = (str, int, float, bool, type(None))


def _plain(v: Any, depth: int = 0) -> bool:
    """Plain data: strings, numbers, booleans, None, and lists/dicts of those (no tensors)."""
    if isinstance(v, _PLAIN):
        return True
    if depth > 8:
        return False
    if isinstance(v, (list, tuple)):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x, depth + 1) for k, x in v.items())
    return False


def _check_tensors(obj: Any, where: str, path: Path | str, depth: int = 0) -> None:
    """Every tensor under ``obj`` is real (not ``meta``), on the CPU or a CUDA device, and finite."""
    if depth > 8:
        raise CheckpointError(f"{path}: {where} is nested too deeply; it was not written by reptile-lab")
    if isinstance(obj, torch.Tensor):
        if obj.is_meta or obj.device.type not in ("cpu", "cuda"):
            raise CheckpointError(f"{path}: {where} is a tensor on device {obj.device.type!r}, which holds no "
                                  f"data; it was not written by reptile-lab")
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            raise CheckpointError(f"{path}: {where} holds NaN or infinite values; the run had diverged when "
                                  f"it was written; use an earlier checkpoint")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_tensors(v, f"{where}[{k!r}]", path, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_tensors(v, f"{where}[{i}]", path, depth + 1)
    elif not isinstance(obj, _PLAIN):
        raise CheckpointError(f"{path}: {where} holds a {type(obj).__name__}; it was not written by reptile-lab")


def _spec_shapes(spec: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the model ``spec`` names, built on the ``meta`` device (nothing allocated)."""
    from .models import MODELS, LinearModel
    cls = LinearModel if spec["name"] == "linear" else MODELS.get(spec["name"])
    if cls is None:
        raise ValueError(f"unknown model {spec['name']!r}")
    with torch.device("meta"):
        model = cls(**spec["kwargs"])
    return {k: tuple(v.shape) for k, v in model.named_parameters()}


def validate_checkpoint(payload: dict[str, Any], path: str | Path = "the checkpoint") -> dict[str, Any]:
    """Check a training checkpoint's whole payload before anything is built from it; returns it.

    Checked: only known keys (:data:`CHECKPOINT_KEYS`); ``format == "reptile-lab"``; ``iteration`` a
    whole number >= 0; ``params`` a non-empty dict of real, finite, floating-point tensors;
    optimizer states made of tensors and plain values, all finite; ``config``, ``extra`` and
    ``model_spec`` plain data, the config valid for :class:`reptile.train.TrainConfig`; the model
    that ``model_spec`` names has exactly the saved parameter names and shapes (built on the
    ``meta`` device, so a spec naming a huge model allocates nothing).

    Raises:
        CheckpointError: naming the file, the offending entry and why.
    """
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: {what}; it was not written by `reptile train`, or was tampered with")

    if not isinstance(payload, dict):
        raise bad(f"it holds a {type(payload).__name__}, not a dict")
    unknown = sorted(str(k) for k in payload if k not in CHECKPOINT_KEYS)
    if unknown:
        raise bad(f"unknown entries {unknown[:5]}")
    if payload.get("format") != "reptile-lab":
        raise bad(f"format is {payload.get('format')!r}, not 'reptile-lab'")
    it = payload.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise bad(f"iteration is {it!r}, not a whole number >= 0")
    params = payload.get("params")
    if not isinstance(params, dict) or not params:
        raise bad("it holds no parameters (params)")
    for k, v in params.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor) or not v.is_floating_point():
            raise bad(f"parameter {k!r} is a {type(v).__name__ if not isinstance(v, torch.Tensor) else v.dtype}, "
                      f"not a floating-point tensor")
    _check_tensors(params, "params", path)
    for key in ("inner_state", "outer_state"):
        if key in payload and payload[key] is not None:
            if not isinstance(payload[key], dict):
                raise bad(f"{key} is a {type(payload[key]).__name__}, not a dict")
            _check_tensors(payload[key], key, path)
    for key in ("config", "extra", "model_spec"):
        v = payload.get(key)
        if v is not None and not (isinstance(v, dict) and _plain(v)):
            raise bad(f"{key} is not a dict of plain values")
    if not isinstance(payload.get("torch_version", ""), str):
        raise bad("torch_version is not a string")
    extra = payload.get("extra") or {}
    if "family" in extra and not isinstance(extra["family"], str):
        raise bad("extra['family'] is not a string")
    if "args" in extra and not isinstance(extra["args"], dict):
        raise bad("extra['args'] is not a dict")
    if payload.get("config") is not None:
        from .config import TrainConfig
        try:
            TrainConfig(**payload["config"])
        except (TypeError, ValueError) as e:
            raise bad(f"its training config is invalid ({e})") from None
    spec = payload.get("model_spec")
    if spec is not None:
        if not (isinstance(spec.get("name"), str) and isinstance(spec.get("kwargs", {}), dict)):
            raise bad("model_spec is not {'name': str, 'kwargs': dict}")
        try:
            shapes = _spec_shapes({"name": spec["name"], "kwargs": spec.get("kwargs", {})})
        except (TypeError, ValueError, RuntimeError) as e:
            raise bad(f"model_spec {spec} does not describe a model ({e})") from None
        saved = {k: tuple(v.shape) for k, v in params.items()}
        if shapes != saved:
            diff = sorted(set(shapes.items()) ^ set(saved.items()))[:4]
            raise bad(f"its model_spec and its parameters disagree ({diff} ...)")
    return payload


def load_training_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """:func:`load_checkpoint` followed by :func:`validate_checkpoint` (what training and eval read)."""
    return validate_checkpoint(load_checkpoint(path, map_location), path)
