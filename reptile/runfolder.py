"""Run folders: who owns them, one writer at a time, and what may be deleted in them.

A run folder (``reptile train --out``) holds ``checkpoints/ckpt-<N>.pt``, ``metrics.csv`` and a
marker file, :data:`MARKER`, saying it is a reptile-lab run folder. The rules:

* **Ownership.** Training starts only in a folder that is absent, empty, marked, or a run folder
  written before the marker existed (nothing but ``checkpoints/`` holding reptile-lab checkpoints
  and ``metrics.csv``). Any other non-empty folder belongs to someone else and is refused
  (:class:`RunFolderError`); nothing in it is read, changed or deleted.
* **One writer.** The writer holds an exclusive ``fcntl.flock`` on the folder itself for as long
  as it trains. The operating system releases it when the process ends, however it ends
  (SIGKILL included), so a killed run never leaves a stale lock. A second writer is refused at
  once with :class:`RunFolderBusy`. In a ``torchrun`` job only rank 0 writes and locks.
* **Nothing unreadable is started over.** Checkpoint files that all fail to load mean a run that
  cannot be continued; starting over would overwrite ``metrics.csv`` and prune those files, so it
  is refused with the reason for each file and what to do (:func:`find_resume_checkpoint`,
  :func:`check_fresh_start`).
* **Pruning.** Only reptile-lab checkpoints (by their header) of iterations this run has already
  passed are pruned; a file that is not one, or that is ahead of the run, is never deleted
  (:func:`prune_own_checkpoints`).

Resume settings (issue 15 item 7, issue 18 item 4): :func:`settings_from_checkpoint` reads the
settings a run was trained with back from its checkpoint and :func:`check_resume_settings`
merges the settings given now, refusing any change that would alter the numbers, except raising
``iterations`` (the annealed outer step then follows the new total; a note says so).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import MAGIC, CheckpointError, _CKPT, list_checkpoints, load_training_checkpoint

MARKER = ".reptile-lab-run"
"""Name of the marker file in a run folder (JSON: ``{"reptile-lab": "run folder", "version": 1}``)."""

MARKER_CONTENT = {"reptile-lab": "run folder", "version": 1}

#: what a run folder written before the marker existed may hold
_LEGACY_ENTRIES = {"checkpoints", "metrics.csv"}


class RunFolderError(ValueError):
    """A run folder cannot be used: another tool's folder, unreadable checkpoints, a bad layout."""


class RunFolderBusy(RunFolderError):
    """Another process is writing to the run folder."""


def _has_checkpoint_header(path: Path) -> bool:
    """Whether ``path`` starts with the reptile-lab checkpoint header (reads only its first bytes)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _is_temporary(name: str) -> bool:
    """A temporary file of :func:`reptile.checkpoint.atomic_write_bytes` (left by a killed writer)."""
    return name.startswith(".") and name.endswith(".tmp")


def is_marked(path: str | Path) -> bool:
    """Whether ``path`` holds the run-folder marker."""
    return (Path(path) / MARKER).is_file()


def _foreign_entries(path: Path) -> list[str]:
    """Entries of ``path`` that make it someone else's folder ([] for an empty, marked or legacy run)."""
    if not path.is_dir() or is_marked(path):
        return []
    entries = sorted(p.name for p in path.iterdir())
    foreign = [e for e in entries if e not in _LEGACY_ENTRIES and not _is_temporary(e)]
    ck = path / "checkpoints"
    if ck.is_dir():
        foreign += [f"checkpoints/{p.name}" for p in sorted(ck.iterdir())
                    if not (_CKPT.match(p.name) and p.is_file() and _has_checkpoint_header(p))
                    and not _is_temporary(p.name)]
    # a ``checkpoints`` file: reported by check_run_folder with what to do
    mc = path / "metrics.csv"
    if mc.is_file():
        try:
            with open(mc, "rb") as f:
                head = f.read(64)
        except OSError:
            head = b""
        if head and not head.startswith(b"iteration,metric,value"):
            foreign.append("metrics.csv (not reptile-lab's)")
    return foreign


def check_run_folder(path: str | Path, flag: str = "--out") -> Path:
    """Raise :class:`RunFolderError` unless training may write into ``path``; nothing is changed.

    Refused: a non-empty folder that is not a reptile-lab run; a ``checkpoints`` entry that is a
    file, or a folder (or its ``checkpoints``) that is not writable. Returns ``path``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    foreign = _foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunFolderError(f"{flag} {path} is not a reptile-lab run folder (no {MARKER} marker) and is not "
                             f"empty (it holds {shown}); nothing in it was changed. Choose an empty or new "
                             f"{flag}")
    ck = path / "checkpoints"
    if ck.exists() and not ck.is_dir():
        raise RunFolderError(f"{ck} is a file, not a folder; training would fail at its first checkpoint. "
                             f"Move it away or choose another {flag}")
    for d in (path, ck):
        if d.is_dir() and not os.access(d, os.W_OK | os.X_OK):
            raise RunFolderError(f"{d} is not writable; training would fail at its first checkpoint. "
                                 f"Fix its permissions or choose another {flag}")
    return path


def find_resume_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of run folder ``path`` that loads, or ``None`` if it holds none at all.

    A damaged newer checkpoint is skipped (an older good one is used). Raises
    :class:`RunFolderError` when checkpoint files exist but none of them loads: the run cannot be
    continued, and starting it over would lose it. The message gives each file's reason.
    """
    files = list_checkpoints(Path(path) / "checkpoints")
    reasons = []
    for p in reversed(files):
        try:
            return p, load_training_checkpoint(p)
        except (CheckpointError, OSError) as e:
            reasons.append(str(e))
    if not files:
        return None
    raise RunFolderError(
        f"none of the {len(files)} checkpoint(s) in {Path(path) / 'checkpoints'} can be read, so the run cannot be "
        f"continued, and starting over would overwrite it: " + "; ".join(reasons[:3])
        + ("; ..." if len(reasons) > 3 else "") + ". Nothing was changed. Use the reptile-lab version that wrote "
        "them, restore them from a backup, or move them away (or choose another --out) to start a new run")


def check_fresh_start(path: str | Path) -> None:
    """Raise :class:`RunFolderError` if run folder ``path`` holds checkpoint files (good or not).

    A fresh start in such a folder would overwrite ``metrics.csv`` and prune the checkpoints.
    """
    files = list_checkpoints(Path(path) / "checkpoints")
    if files:
        raise RunFolderError(f"{path} already holds {len(files)} checkpoint(s) (newest {files[-1].name}); "
                             f"pass --resume to continue it (MetaTrainer.resume()), or choose another --out "
                             f"to start a new run")


def prune_own_checkpoints(directory: str | Path, keep: int, iteration: int) -> list[Path]:
    """Delete all but the ``keep`` newest reptile-lab checkpoints of iterations ``<= iteration``.

    Files without the reptile-lab header (another tool's, or damaged ones) and checkpoints ahead
    of ``iteration`` are never deleted. Returns the deleted paths.
    """
    own = [p for p in list_checkpoints(directory)
           if int(_CKPT.match(p.name)[1]) <= iteration and _has_checkpoint_header(p)]
    gone = own[:-keep] if keep > 0 else own
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


class RunFolder:
    """The writer's hold on a run folder: ownership checked, an exclusive lock, the marker.

    Use :meth:`acquire` (or ``with RunFolder(path):``) before the first read of checkpoints that
    will be continued, and :meth:`release` when training ends. :meth:`mark` writes the marker
    (called before the first file is written). A folder that :meth:`acquire` created and that
    holds nothing but the marker when released is removed again.
    """

    def __init__(self, path: str | Path, flag: str = "--out") -> None:
        self.path, self.flag = Path(path), flag
        self._fd: int | None = None
        self._created = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunFolder":
        """Check ownership, create the folder if needed, and lock it; raises :class:`RunFolderError`."""
        if self._fd is not None:
            return self
        check_run_folder(self.path, self.flag)
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
                self._created = True
            except FileExistsError:  # another writer made it just now; the lock decides
                pass
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            self._created = False  # the folder is the lock holder's now: never remove it without the lock
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunFolderBusy(f"another process is writing to the run folder {self.path} (reptile train, "
                                    f"or a --resume of it); wait for it to finish or stop it, or choose "
                                    f"another run folder") from None
            raise
        self._fd = fd
        # checked again under the lock: a writer that started meanwhile may have changed the folder
        try:
            check_run_folder(self.path, self.flag)
            if self._created or not any(self.path.iterdir()):
                self.mark()
        except BaseException:
            self.release()
            raise
        return self

    def mark(self) -> None:
        """Write the marker file if it is not there yet."""
        m = self.path / MARKER
        if not m.exists():
            m.write_text(json.dumps(MARKER_CONTENT) + "\n")

    def _forget_created(self) -> None:
        if self._created:
            try:
                entries = list(self.path.iterdir())
                if all(p.name == MARKER for p in entries):
                    for p in entries:
                        p.unlink()
                    self.path.rmdir()
            except OSError:
                pass
            self._created = False

    def release(self, keep_empty: bool = False) -> None:
        """Unlock; a folder this hold created and that holds only the marker is removed (unless keep_empty)."""
        if self._fd is None:
            return
        if not keep_empty:
            self._forget_created()
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a hold dropped without release (an exception between calls)
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __enter__(self) -> "RunFolder":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------------- resume settings
#: settings that do not change the trained numbers: they may differ on resume (the new value is used)
FREE_SETTINGS = frozenset({"data_dir", "checkpoint_every", "log_every", "keep_checkpoints", "compile", "channels_last",
                           "threads", "no_progress", "eval_tasks", "eval_seed", "out", "resume", "command",
                           "func", "json"})

#: settings that change the numbers only by rounding: the new value is used, with a note
ROUNDING_SETTINGS = frozenset({"device"})


@dataclass
class ResumeSettings:
    """The settings a resumed run uses, and notes to show the user (one line each)."""

    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def settings_from_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The settings a run was trained with, read back from one of its checkpoints.

    Returns the command-line settings (``extra["args"]``, with ``family`` from ``extra["family"]``)
    updated with the training config (``ckpt["config"]``), so that ``iterations`` etc. are the
    ones the trainer used. Raises :class:`CheckpointError` if the checkpoint holds neither.
    """
    extra = ckpt.get("extra") if isinstance(ckpt.get("extra"), dict) else {}
    args = extra.get("args") if isinstance(extra.get("args"), dict) else None
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
    if args is None and config is None:
        raise CheckpointError("the checkpoint does not say which settings it was trained with; it was not written "
                              "by `reptile train`")
    out: dict[str, Any] = safe_saved_args(args or {})
    if "family" in extra:
        out["family"] = extra["family"]
    return out


#: saved settings that name places on disk: a checkpoint never chooses where files are written
PATH_SETTINGS = ("data_dir",)


def safe_saved_args(args: dict[str, Any]) -> dict[str, Any]:
    """Saved command-line settings with the places on disk taken out of the checkpoint's hands.

    ``data_dir`` of the generated glyphs is where their cache is *written*: it is dropped (the
    cache goes to the user's own cache folder, ``$REPTILE_CACHE``; the glyphs are the same, they
    depend only on the seed and the settings). A dataset folder that is only read (Omniglot,
    Mini-ImageNet) is kept: the readers never create or write anything, and say so if it is
    missing (``--data-dir`` given on ``--resume`` replaces it). A saved device that holds no data
    (``meta``) is refused. Other values are returned as they are;
    :func:`reptile.checkpoint.validate_checkpoint` has checked they are plain data.

    Raises:
        ValueError: a saved path that is not a string, or a device that holds no data.
    """
    out = dict(args)
    dev = out.get("device")
    if dev is not None:
        try:
            kind = torch.device(dev).type if isinstance(dev, str) else None
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ("cpu", "cuda", "mps", "xpu"):
            raise ValueError(f"the checkpoint's saved device {dev!r} cannot hold data; it was not written by "
                             f"`reptile train`")
    for key in PATH_SETTINGS:
        v = out.get(key)
        if v is None:
            continue
        if not isinstance(v, str):
            raise ValueError(f"the checkpoint's saved {key} is a {type(v).__name__}, not a folder name")
        if out.get("dataset", "glyphs") == "glyphs":
            out[key] = None
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    return a == b


def check_resume_settings(saved: dict[str, Any], given: dict[str, Any], reached: int | None = None,
                          anneal: bool | None = None) -> ResumeSettings:
    """Merge the settings given now into the saved ones; refuse changes that break exactness.

    Args:
        saved: the settings the run was trained with (:func:`settings_from_checkpoint`, or a
            checkpoint's ``config``).
        given: the settings given now (the CLI: only the flags the user typed; the API: a whole
            config). Keys not in ``saved`` are taken as they are.
        reached: the checkpoint's iteration (``iterations`` may not go below it).
        anneal: whether the outer step size is annealed (default: ``not saved["no_anneal"]`` or
            ``saved["anneal"]``); only used to word the note on raising ``iterations``.

    Returns:
        :class:`ResumeSettings`: ``saved`` updated with the allowed changes, and notes.

    Raises:
        ValueError: a change of a setting that affects the numbers (every one except
            :data:`FREE_SETTINGS`, :data:`ROUNDING_SETTINGS` and a raised ``iterations``), naming
            each and its saved value.
    """
    out, notes, bad = dict(saved), [], []
    for k, v in given.items():
        if k not in saved or _same(saved[k], v):
            out[k] = v
            continue
        if k in FREE_SETTINGS:
            out[k] = v
        elif k in ROUNDING_SETTINGS:
            out[k] = v
            notes.append(f"{k} changed from {saved[k]!r} to {v!r}: the result equals the uninterrupted run's "
                         f"only up to rounding")
        elif k == "iterations" and saved[k] is not None and v is not None and v > saved[k]:
            if reached is not None and reached > v:
                bad.append(f"iterations (the checkpoint is at iteration {reached}, beyond {v})")
                continue
            out[k] = v
            ann = anneal if anneal is not None else (not saved.get("no_anneal", False) if "no_anneal" in saved
                                                     else saved.get("anneal", True))
            if ann:
                notes.append(f"extending the run from {saved[k]} to {v} iterations: the annealed outer step size "
                             f"now follows the new total (eps_t = outer_lr (1 - t/{v}) from here on), so the "
                             f"result differs from an uninterrupted {v}-iteration run")
            else:
                notes.append(f"extending the run from {saved[k]} to {v} iterations (constant outer step size: "
                             f"the same numbers as an uninterrupted {v}-iteration run)")
        else:
            bad.append(f"{k} (saved {saved[k]!r}, now {v!r})"
                       + (": iterations can only be raised" if k == "iterations" else ""))
    if bad:
        raise ValueError(f"cannot resume: the run was trained with other settings for {', '.join(bad)}; these "
                         f"change the numbers. Drop those flags (--resume reads the settings back from the "
                         f"checkpoint) or start a new run in another --out")
    return ResumeSettings(out, notes)


