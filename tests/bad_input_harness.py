"""Shared harness of the bad-input tests (``tests/test_bad_inputs_*.py``, one file per boundary).

Each test gives the toolkit one bad input -- on the command line, to the Python API, to a
dataset reader, as a checkpoint, to the demo server or to ``reptile verify`` -- and checks that

* the error has the right type (CLI: exit code 2 for usage errors, 1 for failures) and a
  message that names the problem and, where there is one, the fix;
* the CLI prints no traceback;
* nothing is written half-way: no temporary files, no partial outputs, existing files intact.

The ``ctx`` fixture (per test) gives each test its own folder (also the working directory, so a
default output folder lands there) and checks afterwards that it holds no temporary file;
``ctx.sine_run`` (a finished two-iteration sine run) and ``ctx.server`` (the demo server) are
made only for the tests that use them. Fault tests (SIGKILL, SIGINT, a failing fsync during a
checkpoint write, a damaged newest checkpoint) are in ``test_faults.py``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
import os
import pickle
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import analysis
from analysis.verify import run_verify
from reptile import MLP, MetaTrainer, TrainConfig, TrainingDiverged, build_model, make_loss, meta_gradient, params_of
from reptile.checkpoint import FORMAT_VERSION, MAGIC, CheckpointError, load_checkpoint, save_checkpoint
from reptile.cli import main
from reptile.cli.demo import make_server
from reptile.data import ImageClassDataset, ImageLoadError, load_dataset, load_image, sample_episode
from reptile.models import model_spec

# ---------------------------------------------------------------------------------------- harness
def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content ('dir' for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"link:{os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _temporaries(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".part")) or p.name.startswith(".tmp")]


@dataclass
class Ctx:
    tmp: Path
    capsys: pytest.CaptureFixture
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest

    @property
    def sine_run(self) -> Path:
        """A finished two-iteration sine run (made for the tests that ask for it)."""
        return self.request.getfixturevalue("sine_run")

    @property
    def server(self) -> "http.server.ThreadingHTTPServer":
        """The demo server (started for the tests that ask for it)."""
        return self.request.getfixturevalue("server")

    def cli(self, argv: list[str], code: int, *needles: str, unchanged: bool = True) -> str:
        """Run ``reptile ARGV``; expect exit ``code``, every needle in stderr, no traceback and (by
        default) not a byte changed under the working folder. Returns stderr."""
        argv = [str(a) for a in argv]
        before = _snapshot(self.tmp)
        self.capsys.readouterr()
        if code == 2:  # usage errors come from argparse as SystemExit(2) or as a returned 2
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
        else:
            rc = main(argv)
        out, err = self.capsys.readouterr()
        assert rc == code, f"reptile {' '.join(argv)} exited {rc}, expected {code}; stderr: {err}"
        assert "Traceback" not in err and "Traceback" not in out
        assert err.strip(), "an error must say what went wrong"
        for needle in needles:
            assert needle in err, f"{needle!r} not in stderr: {err}"
        assert not _temporaries(self.tmp), _temporaries(self.tmp)
        if unchanged:
            assert _snapshot(self.tmp) == before, "a failed command wrote or changed files"
        return err

    def unchanged(self):
        """Context manager: nothing under the working folder is created, changed or removed."""
        ctx = self

        class _Guard:
            def __enter__(self):
                self.before = _snapshot(ctx.tmp)

            def __exit__(self, *exc):
                assert not _temporaries(ctx.tmp), _temporaries(ctx.tmp)
                assert _snapshot(ctx.tmp) == self.before, "a failed call wrote or changed files"
                return False
        return _Guard()

    def afile(self) -> Path:
        """A regular file: a path below it can never be created (root ignores chmod; this it cannot)."""
        p = self.tmp / "afile"
        p.write_text("I am a file, not a folder\n")
        return p


SINE = ["--hidden", "4", "--eval-tasks", "1", "--no-progress"]


@pytest.fixture
def ctx(tmp_path, capsys, monkeypatch, request) -> Ctx:
    """The test's folder (also its working directory), checked afterwards for temporary files."""
    monkeypatch.chdir(tmp_path)  # a default output folder (runs/, reports/verify) would land here
    yield Ctx(tmp_path, capsys, monkeypatch, request)
    assert not _temporaries(tmp_path), _temporaries(tmp_path)


@pytest.fixture
def sine_run(tmp_path_factory) -> Path:
    """A finished two-iteration sine run (checkpoints at 1 and 2), in a folder of its own."""
    out = tmp_path_factory.mktemp("sine") / "run"
    assert main(["train", "sine", "--iterations", "2", "--checkpoint-every", "1", "--out", str(out), *SINE]) == 0
    return out


@pytest.fixture
def server(tmp_path_factory):
    """The demo server on a free port, its weights folder holding a symbolic link to a file outside."""
    base = tmp_path_factory.mktemp("demo")
    (base / "secret.json").write_text('{"secret": "TOPSECRET"}')
    weights = base / "weights"
    weights.mkdir()
    (weights / "sine.json").write_text('{"format": "x"}')
    (weights / "link.json").symlink_to(base / "secret.json")
    with serve_demo(weights) as srv:
        yield srv


@contextlib.contextmanager
def serve_demo(weights: Path):
    """The demo server of ``weights`` on a free local port, in a thread, shut down on exit."""
    srv = make_server("127.0.0.1", 0, weights)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _ckpt(run: Path) -> Path:
    return run / "checkpoints" / "ckpt-00000002.pt"


def _wrap(body: bytes, version: int = FORMAT_VERSION) -> bytes:
    """A checkpoint header (magic, version, a *correct* checksum) around ``body``."""
    return MAGIC + str(version).encode() + b"\n" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


class RunsCode:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _get(srv, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)  # the path is sent verbatim
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def _refused(srv, *paths: str) -> None:
    for path in paths:
        status, body = _get(srv, path)
        assert status in (403, 404), (path, status)
        assert b"TOPSECRET" not in body and b"root:" not in body, path


def _tiny_dataset(n_classes: int = 6, per_class: int = 5) -> ImageClassDataset:
    rng = np.random.default_rng(0)
    return ImageClassDataset(images=[rng.random((per_class, 28, 28), dtype=np.float32) for _ in range(n_classes)],
                             class_names=[f"c{i}" for i in range(n_classes)], groups=["g"] * n_classes)


def _register_tiny(ctx: Ctx) -> None:
    """``--dataset tiny``: 6 classes of 5 images per split, registered for this case only."""
    from reptile import fewshot

    ctx.monkeypatch.setitem(fewshot.DATASET_LOADERS, "tiny",
                            lambda data_dir, seed, rotations: {s: _tiny_dataset() for s in ("train", "val", "test")})
    fewshot.load_splits.cache_clear()


def _omniglot_tree(root: Path, alphabets=("Greek", "Korean"), chars: int = 2, drawings: int = 2) -> None:
    for a in alphabets:
        for c in range(1, chars + 1):
            d = root / a / f"character{c:02d}"
            d.mkdir(parents=True)
            for j in range(drawings):
                Image.new("L", (105, 105), 255).save(d / f"{c:04d}_{j:02d}.png")


def _mini_tree(root: Path, splits=("train", "val", "test")) -> None:
    for s in splits:
        d = root / "miniimagenet" / s / "n01532829"
        d.mkdir(parents=True)
        Image.new("RGB", (90, 90), (10, 20, 30)).save(d / "a.JPEG")


def _mlp_setup():
    torch.manual_seed(0)
    model = MLP((1, 4, 1))
    x, y = torch.randn(3, 5, 1), torch.randn(3, 5, 1)
    return model, make_loss(model), params_of(model), (x, y)




#: everything above, helpers with a leading underscore included, for ``from bad_input_harness import *``
__all__ = [n for n in dir() if not n.startswith("__") and n != "annotations"]
