"""Reliability against bad input (issue 9): every case expects a clear error and nothing half-written.

Each case gives the toolkit one bad input -- on the command line, to the Python API, to a
dataset reader, as a checkpoint, to the demo server or to ``reptile verify`` -- and checks that

* the error has the right type (CLI: exit code 2 for usage errors, 1 for failures) and a
  message that names the problem and, where there is one, the fix;
* the CLI prints no traceback;
* nothing is written half-way: no temporary files, no partial outputs, existing files intact.

The cases are one list, ``CASES``; ``test_bad_input[<case>]`` runs each and
``test_case_count[<N>-cases]`` states how many there are. Fault tests (SIGKILL, SIGINT, a
failing fsync during a checkpoint write, a damaged newest checkpoint) are in ``test_faults.py``.
"""
from __future__ import annotations

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
CASES: dict[str, Callable[["Ctx"], None]] = {}


def case(name: str):
    """Register a case under ``name`` (its test id)."""
    def register(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return register


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
    sine_run: Path
    server: "http.server.ThreadingHTTPServer"

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


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory) -> Path:
    """A finished two-iteration sine run (checkpoints at 1 and 2), made once for the module."""
    out = tmp_path_factory.mktemp("sine") / "run"
    assert main(["train", "sine", "--iterations", "2", "--checkpoint-every", "1", "--out", str(out), *SINE]) == 0
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The demo server on a free port, its weights folder holding a symbolic link to a file outside."""
    base = tmp_path_factory.mktemp("demo")
    (base / "secret.json").write_text('{"secret": "TOPSECRET"}')
    weights = base / "weights"
    weights.mkdir()
    (weights / "sine.json").write_text('{"format": "x"}')
    (weights / "link.json").symlink_to(base / "secret.json")
    srv = make_server("127.0.0.1", 0, weights)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
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


# ------------------------------------------------------------------------------ CLI: usage errors (2)
@case("cli-non-numeric-flag")
def _(ctx):
    ctx.cli(["train", "sine", "--iterations", "abc"], 2, "--iterations", "expected a whole number, got 'abc'")


@case("cli-negative-flag")
def _(ctx):
    ctx.cli(["train", "sine", "--inner-steps", "-3"], 2, "--inner-steps", "expected a number >= 1, got -3")


@case("cli-negative-family-flag")  # was a RuntimeError traceback from torch.linspace
def _(ctx):
    ctx.cli(["train", "sine", "--points", "-5"], 2, "--points", "expected a number >= 1, got -5")


@case("cli-alpha-not-positive")
def _(ctx):
    ctx.cli(["train", "sine", "--inner-lr", "0"], 2, "--inner-lr", "expected a positive finite number")
    ctx.cli(["train", "sine", "--test-lr", "-0.5"], 2, "--test-lr", "expected a positive finite number")  # ran before


@case("cli-weights-not-numbers")  # was "invalid <lambda> value"
def _(ctx):
    ctx.cli(["train", "sine", "--algorithm", "combination", "--weights", "1,x,1,1,1"], 2,
            "--weights", "'x' is not a number")


@case("cli-unknown-algorithm")
def _(ctx):
    ctx.cli(["train", "sine", "--algorithm", "mamal"], 2, "invalid choice: 'mamal'", "choose from")


@case("cli-unknown-family")
def _(ctx):
    ctx.cli(["train", "cifar"], 2, "invalid choice: 'cifar'")


@case("cli-demo-port-out-of-range")  # was an OverflowError traceback from bind()
def _(ctx):
    ctx.cli(["demo", "--port", "70000"], 2, "--port", "0..65535")
    ctx.cli(["demo", "--port", "-1"], 2, "--port")


@case("cli-verify-bad-mode")
def _(ctx):
    ctx.cli(["verify", "--quick", "--full"], 2, "not allowed with argument")


@case("cli-verify-unknown-provider")  # was exit 1 with a ModuleNotFoundError traceback on stderr
def _(ctx):
    ctx.cli(["verify", "--only", "nope.module"], 2, "'nope.module' is not an importable module",
            "analysis.taylor_checks")


# -------------------------------------------------------------------------------- CLI: failures (1)
@case("cli-unwritable-out-folder")  # was found only at the first checkpoint, after the work
def _(ctx):
    f = ctx.afile()
    ctx.cli(["train", "sine", "--iterations", "2", "--out", f / "run", *SINE], 1,
            f"{f} is a file, not a folder", "choose another --out")


@case("cli-out-folder-is-a-file")
def _(ctx):
    f = ctx.afile()
    ctx.cli(["train", "sine", "--iterations", "2", "--out", f, *SINE], 1, "is a file, not a folder")


@case("cli-verify-unwritable-out")  # was "[Errno 20] Not a directory"
def _(ctx):
    f = ctx.afile()
    ctx.cli(["verify", "--quick", "--out", f / "report"], 1, "is a file, not a folder", "choose another --out")


@case("cli-export-demo-unwritable-out")
def _(ctx):
    f = ctx.afile()
    ctx.cli(["export-demo", _ckpt(ctx.sine_run), "--out", f / "sine.json"], 1, "is a file, not a folder")


@case("cli-glyphs-sheet-unwritable-out")  # was "[Errno 17] File exists", after building the glyph set
def _(ctx):
    f = ctx.afile()
    ctx.cli(["glyphs", "sheet", "--out", f / "sheet.png"], 1, "is a file, not a folder")


@case("cli-eval-folder-without-checkpoint")
def _(ctx):
    (ctx.tmp / "empty-run").mkdir()
    ctx.cli(["eval", ctx.tmp / "empty-run"], 1, "no checkpoint in", "checkpoints/ckpt-*.pt")


@case("cli-export-demo-non-checkpoint")
def _(ctx):
    png = ctx.tmp / "drawing.png"
    Image.new("L", (28, 28)).save(png)
    ctx.cli(["export-demo", png, "--out", ctx.tmp / "out.json"], 1, "is not a reptile-lab checkpoint",
            "written by `reptile train`")


@case("cli-eval-truncated-checkpoint")
def _(ctx):
    bad = ctx.tmp / "ckpt-00000002.pt"
    raw = _ckpt(ctx.sine_run).read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # cut mid-file
    ctx.cli(["eval", bad], 1, "fails its checksum", "truncated or corrupted", "use an earlier checkpoint")


@case("cli-eval-other-format-version")
def _(ctx):
    body = _ckpt(ctx.sine_run).read_bytes().split(b"\n", 2)[2]
    bad = ctx.tmp / "v2.pt"
    bad.write_bytes(_wrap(body, version=FORMAT_VERSION + 1))
    ctx.cli(["eval", bad], 1, f"format v{FORMAT_VERSION + 1}", f"reads v{FORMAT_VERSION}")


@case("cli-eval-checkpoint-of-another-model")
def _(ctx):
    ckpt = load_checkpoint(_ckpt(ctx.sine_run))
    other = MLP((1, 8, 1))
    ckpt["params"], ckpt["model_spec"] = params_of(other), model_spec(other)
    bad = save_checkpoint(ctx.tmp / "other.pt", ckpt)
    ctx.cli(["eval", bad], 1, "is of another model")


@case("cli-resume-with-another-model")
def _(ctx):
    run = ctx.tmp / "run"
    shutil.copytree(ctx.sine_run, run)
    args = ["train", "sine", "--iterations", "4", "--checkpoint-every", "1", "--out", run, *SINE]
    args[args.index("--hidden") + 1] = "8"
    ctx.cli(args + ["--resume"], 1, "other settings for hidden (saved '4', now '8')")  # and the run's files are untouched


@case("cli-eval-pickle-that-runs-code")
def _(ctx):
    marker = ctx.tmp / "MARKER"
    buf = io.BytesIO()
    torch.save({"params": RunsCode(marker)}, buf)
    bad = ctx.tmp / "evil.pt"
    bad.write_bytes(_wrap(buf.getvalue()))  # a valid header and checksum: only weights_only stops it
    ctx.cli(["eval", bad], 1, "refused by weights_only=True", "posix.system")
    assert not marker.exists()


@case("cli-nan-loss")
def _(ctx):
    out = ctx.tmp / "diverged"
    err = ctx.cli(["train", "sine", "--inner-lr", "1e30", "--iterations", "5", "--out", out, *SINE], 1,
                  "non-finite loss", "no checkpoint was written", "Lower the learning rates")
    assert "iteration 1" in err and not out.exists()


@case("cli-full-disk-during-train")
def _(ctx):
    out = ctx.tmp / "run"
    args = ["train", "sine", "--iterations", "4", "--checkpoint-every", "2", "--log-every", "1", "--out", str(out),
            *SINE]

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with ctx.monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        ctx.cli(args, 1, "No space left on device", "cannot write", "ckpt-00000002.pt", unchanged=False)
    assert not list((out / "checkpoints").glob("*"))  # no checkpoint, no temporary
    assert main(args) == 0  # with space again the same command starts afresh ...
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(rows))  # ... and logs every row once


@case("cli-full-disk-during-export-demo")
def _(ctx):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    ctx.monkeypatch.setattr(os, "fsync", full)
    ctx.cli(["export-demo", _ckpt(ctx.sine_run), "--out", ctx.tmp / "sine.json"], 1, "No space left on device",
            "sine.json")


@case("cli-demo-port-in-use")
def _(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        ctx.cli(["demo", "--port", port], 1, f"port {port} on 127.0.0.1 is already in use", "--port 0")


@case("cli-demo-weights-dir-not-a-folder")
def _(ctx):
    ctx.cli(["demo", "--port", "0", "--weights-dir", ctx.afile()], 1, "is not a folder")


@case("cli-unknown-device")  # was a RuntimeError traceback from torch.device
def _(ctx):
    ctx.cli(["train", "sine", "--device", "tpu", "--out", ctx.tmp / "run"], 1, "unknown device 'tpu'",
            "use cpu, cuda or cuda:N")


@case("cli-combination-weights-wrong-length")
def _(ctx):
    ctx.cli(["train", "sine", "--algorithm", "combination", "--weights", "1,1", "--out", ctx.tmp / "run"], 1,
            "needs inner_steps = 5 weights", "got 2")


@case("cli-k-too-small")
def _(ctx):
    ctx.cli(["train", "sine", "--algorithm", "maml", "--inner-steps", "1", "--out", ctx.tmp / "run"], 1,
            "maml needs inner_steps >= 2")


@case("cli-missing-data-folder")
def _(ctx):
    ctx.cli(["train", "fewshot", "--dataset", "omniglot", "--data-dir", ctx.tmp / "nope", "--out", ctx.tmp / "run"],
            1, "Omniglot folder not found", "images_background")


@case("cli-no-data-folder-given")
def _(ctx):
    ctx.cli(["train", "fewshot", "--dataset", "miniimagenet", "--out", ctx.tmp / "run"], 1,
            "read from a folder you provide", "docs/data.md")


@case("cli-more-ways-than-classes")
def _(ctx):
    _register_tiny(ctx)
    ctx.cli(["train", "fewshot", "--dataset", "tiny", "--ways", "10", "--out", ctx.tmp / "run"], 1,
            "has 6 classes, fewer than --ways 10")


@case("cli-shots-larger-than-a-class")
def _(ctx):
    _register_tiny(ctx)
    ctx.cli(["train", "fewshot", "--dataset", "tiny", "--ways", "3", "--train-shots", "10", "--out", ctx.tmp / "run"],
            1, "--train-shots 10 exceed the 5 examples")


# ------------------------------------------------------------------------------------ dataset readers
@case("data-missing-folder")
def _(ctx):
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match="Omniglot folder not found.*expected one of"):
        load_dataset("omniglot", ctx.tmp / "nope")
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match="Mini-ImageNet folder not found.*layout"):
        load_dataset("miniimagenet", ctx.tmp / "nope")


@case("data-empty-folder")
def _(ctx):
    (ctx.tmp / "empty").mkdir()
    with ctx.unchanged(), pytest.raises(ValueError, match="no alphabet folders in .*empty"):
        load_dataset("omniglot", ctx.tmp / "empty")
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match=r"split folder not found: .*empty/train"):
        load_dataset("miniimagenet", ctx.tmp / "empty")


@case("data-omniglot-wrong-layout")
def _(ctx):
    d = ctx.tmp / "omniglot" / "Greek"
    d.mkdir(parents=True)
    Image.new("L", (105, 105), 255).save(d / "0001_01.png")  # drawings directly in the alphabet folder
    with ctx.unchanged(), pytest.raises(ValueError, match="Greek has no character<NN> subfolders.*expected one of"):
        load_dataset("omniglot", ctx.tmp)


@case("data-omniglot-still-zipped")
def _(ctx):
    (ctx.tmp / "images_background.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with ctx.unchanged(), pytest.raises(ValueError, match="unzip them"):
        load_dataset("omniglot", ctx.tmp)


@case("data-miniimagenet-wrong-layout")
def _(ctx):
    _mini_tree(ctx.tmp, splits=("train", "test"))  # no val/
    with ctx.unchanged(), pytest.raises(FileNotFoundError, match=r"miniimagenet/val.*\{train,val,test\}/<wnid>"):
        load_dataset("miniimagenet", ctx.tmp)
    (ctx.tmp / "miniimagenet" / "val" / "n99999999").mkdir(parents=True)  # a class without images
    with ctx.unchanged(), pytest.raises(ValueError, match="n99999999 has no image files"):
        load_dataset("miniimagenet", ctx.tmp)


@case("data-corrupt-image")
def _(ctx):
    _omniglot_tree(ctx.tmp / "omniglot")
    victim = ctx.tmp / "omniglot" / "Korean" / "character02" / "0002_01.png"
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    with ctx.unchanged(), pytest.raises(ImageLoadError, match="cannot read image .*0002_01.png"):
        load_dataset("omniglot", ctx.tmp, n_train=2)


@case("data-truncated-image")
def _(ctx):
    _mini_tree(ctx.tmp)
    victim = ctx.tmp / "miniimagenet" / "test" / "n01532829" / "a.JPEG"
    img = np.random.default_rng(0).integers(0, 256, (90, 90, 3), dtype=np.uint8)
    Image.fromarray(img).save(victim, format="JPEG")
    victim.write_bytes(victim.read_bytes()[:400])
    with ctx.unchanged(), pytest.raises(ImageLoadError, match="cannot read image .*a.JPEG"):
        load_dataset("miniimagenet", ctx.tmp)


@case("image-cmyk-converted")
def _(ctx):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[...] = (200, 50, 10)
    Image.fromarray(rgb).convert("CMYK").save(ctx.tmp / "cmyk.jpg", quality=100)
    out = load_image(ctx.tmp / "cmyk.jpg", mode="RGB", dtype="uint8")
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - rgb).max() <= 3


@case("image-16-bit-scaled-not-clipped")  # mid-grey 16-bit was read as white
def _(ctx):
    a16 = np.array([[0, 32896, 65535]], dtype=np.uint16)  # black, mid-grey (128 * 257), white
    Image.fromarray(a16).save(ctx.tmp / "g16.png")
    assert load_image(ctx.tmp / "g16.png", mode="L", dtype="uint8").tolist() == [[0, 128, 255]]
    assert load_image(ctx.tmp / "g16.png", mode="RGB", dtype="uint8")[0, 1].tolist() == [128, 128, 128]


@case("image-float-refused")  # 32-bit float pixels were truncated to 0/1
def _(ctx):
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(ctx.tmp / "f.tiff")
    with pytest.raises(ImageLoadError, match="f.tiff: 32-bit floating-point pixels.*save it as an 8- or 16-bit PNG"):
        load_image(ctx.tmp / "f.tiff")


@case("image-bad-arguments")  # mode="CMYK" returned 4 channels; size=0 blamed the file
def _(ctx):
    Image.new("L", (8, 8)).save(ctx.tmp / "x.png")
    with pytest.raises(ValueError, match="mode must be 'L'.*or 'RGB', got 'CMYK'"):
        load_image(ctx.tmp / "x.png", mode="CMYK")
    with pytest.raises(ValueError, match="size must be a positive whole number"):
        load_image(ctx.tmp / "x.png", size=0)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'uint8'"):
        load_image(ctx.tmp / "x.png", dtype="float16")


@case("data-unknown-dataset")
def _(ctx):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; choose one of glyphs, omniglot, miniimagenet"):
        load_dataset("cifar")


@case("episode-more-ways-than-classes")
def _(ctx):
    with pytest.raises(ValueError, match="cannot draw a 10-way task from a dataset of 6 classes; use n_way <= 6"):
        sample_episode(_tiny_dataset(), np.random.default_rng(0), n_way=10, train_shots=1)


@case("episode-shots-larger-than-a-class")
def _(ctx):
    with pytest.raises(ValueError, match=r"5 \+ 1 = 6 examples per class.*only 5; lower the shots"):
        sample_episode(_tiny_dataset(), np.random.default_rng(0), n_way=3, train_shots=5, test_shots=1)
    with pytest.raises(ValueError, match="train_shots >= 1"):
        sample_episode(_tiny_dataset(), np.random.default_rng(0), n_way=3, train_shots=-1)


# --------------------------------------------------------------------------------------- Python API
@case("api-batch-of-wrong-shape")
def _(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    with pytest.raises(ValueError, match=r"leading \[k, b\] dimensions, got \(3, 5, 1\) and \(3, 4, 1\)"):
        meta_gradient("reptile", loss_fn, phi, (x, y[:, :4]), 0.1)
    with pytest.raises(ValueError, match=r"inputs of shape \(5, 3\) do not fit the model MLP"):
        meta_gradient("reptile", loss_fn, phi, (torch.randn(3, 5, 3), y), 0.1)
    with pytest.raises(ValueError, match="targets must be shaped like the model's output"):
        meta_gradient("reptile", loss_fn, phi, (x, torch.randn(3, 5, 2)), 0.1)
    with pytest.raises(ValueError, match="batches must be a pair of tensors"):
        meta_gradient("reptile", loss_fn, phi, ([1.0], [2.0]), 0.1)


@case("api-alpha-not-positive")
def _(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    for alpha in (0.0, -0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="alpha must be a positive finite number"):
            meta_gradient("reptile", loss_fn, phi, batches, alpha)


@case("api-k-too-small")
def _(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    for name in ("maml", "fomaml"):
        with pytest.raises(ValueError, match="need at least 2 minibatches, got k = 1"):
            meta_gradient(name, loss_fn, phi, (x[:1], y[:1]), 0.1)


@case("api-weights-of-wrong-length")
def _(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    with pytest.raises(ValueError, match="needs k = 3 weights w_1..w_k, got 2"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="needs k = 3 weights"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights=None)


@case("api-weights-not-finite")  # NaN weights gave a NaN meta-gradient; a string a TypeError
def _(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    with pytest.raises(ValueError, match="weight w_2 must be a finite number, got nan"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights=[1.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="a list of numbers"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights="abc")
    with pytest.raises(ValueError, match="weight w_3 must be a finite number"):
        TrainConfig(algorithm="combination", inner_steps=3, weights=[1, 1, float("inf")])


@case("api-unknown-names")
def _(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    with pytest.raises(ValueError, match="unknown algorithm 'mamal'; choose one of"):
        meta_gradient("mamal", loss_fn, phi, batches, 0.1)
    with pytest.raises(ValueError, match="unknown algorithm 'mamal'; choose one of"):
        TrainConfig(algorithm="mamal")
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; choose one of \['linear', 'miniimagenet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match=r"unknown criterion 'hinge'; choose one of \['cross_entropy', 'mse'\]"):
        make_loss(model, "hinge")


@case("api-params-of-wrong-shape")  # was "t() expects a tensor with <= 2 dimensions"
def _(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    bad = dict(phi, **{"net.0.weight": torch.randn(4, 1, 1)})
    with pytest.raises(ValueError, match=r"params\['net.0.weight'\] has shape \(4, 1, 1\), the model MLP expects \(4, 1\)"):
        meta_gradient("reptile", loss_fn, bad, batches, 0.1)


@case("api-dtype-mismatch")  # was "mat1 and mat2 must have the same dtype"
def _(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    with pytest.raises(ValueError, match="inputs are torch.float64 but the parameters are torch.float32; convert"):
        meta_gradient("reptile", loss_fn, phi, (x.double(), y.double()), 0.1)


@case("api-train-config-not-whole-numbers")  # '5' gave a TypeError, 2.5 was accepted
def _(ctx):
    with pytest.raises(ValueError, match="inner_steps must be a whole number, got '5'"):
        TrainConfig(inner_steps="5")
    with pytest.raises(ValueError, match="iterations must be a whole number, got 2.5"):
        TrainConfig(iterations=2.5)
    with pytest.raises(ValueError, match="inner_lr must be a positive finite number, got -1"):
        TrainConfig(inner_lr=-1)


@case("api-hvp-bad-shapes")
def _(ctx):
    model, loss_fn, phi, _ = _mlp_setup()
    batch = (torch.randn(5, 1), torch.randn(5, 1))
    v = {k: torch.randn_like(p) for k, p in phi.items()}
    with pytest.raises(ValueError, match=r"non-empty leading batch dimension, got \(5, 1\) and \(4, 1\)"):
        analysis.hvp(loss_fn, phi, (batch[0], batch[1][:4]), v)
    with pytest.raises(ValueError, match=r"v\['net.0.weight'\] has shape \(2,\), phi\['net.0.weight'\] has \(4, 1\)"):
        analysis.hvp(loss_fn, phi, batch, {k: torch.randn(2) for k in phi})
    with pytest.raises(ValueError, match="v must have the keys of phi"):
        analysis.hvp(loss_fn, phi, batch, {"a": torch.randn(2)})
    with pytest.raises(ValueError, match="unknown HVP method 'fwd'"):
        analysis.hvp(loss_fn, phi, batch, v, method="fwd")


@case("api-nan-loss-keeps-last-good-checkpoint")
def _(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    calls = [0]

    def sampler(rng):  # clean data for two iterations, then a NaN
        calls[0] += 1
        return (x if calls[0] <= 2 else torch.full_like(x, float("nan"))), y

    out = ctx.tmp / "run"
    trainer = MetaTrainer(loss_fn, phi, sampler, TrainConfig(iterations=5, checkpoint_every=1), out)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss or update at iteration 3.*last good checkpoint "
                                               r"is .*ckpt-00000002.pt \(iteration 2\).*Lower the learning rates"):
        trainer.run(progress=False)
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    assert load_checkpoint(out / "checkpoints" / "ckpt-00000002.pt")["iteration"] == 2
    assert not _temporaries(ctx.tmp)


# --------------------------------------------------------------------------------------- checkpoints
@case("ckpt-truncated-mid-file")
def _(ctx):
    p = ctx.tmp / "ckpt.pt"
    save_checkpoint(p, {"iteration": 1, "params": {"w": torch.randn(1000)}})
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="fails its checksum: the file is truncated or corrupted"):
        load_checkpoint(p)
    p.write_bytes(p.read_bytes()[:30])  # cut inside the header (in the checksum line)
    with pytest.raises(CheckpointError, match="malformed header"):
        load_checkpoint(p)


@case("ckpt-other-format-version")
def _(ctx):
    buf = io.BytesIO()
    torch.save({"iteration": 1}, buf)
    (ctx.tmp / "v0.pt").write_bytes(_wrap(buf.getvalue(), version=0))
    with pytest.raises(CheckpointError, match=f"format v0; this reptile-lab reads v{FORMAT_VERSION}"):
        load_checkpoint(ctx.tmp / "v0.pt")


@case("ckpt-raw-pickle-runs-os-system")
def _(ctx):
    marker = ctx.tmp / "MARKER"
    (ctx.tmp / "evil.pt").write_bytes(_wrap(pickle.dumps({"params": RunsCode(marker)}, protocol=2)))
    with pytest.raises(CheckpointError, match=r"refused by weights_only=True, nothing in it was run.*posix.system"):
        load_checkpoint(ctx.tmp / "evil.pt")
    assert not marker.exists()


@case("ckpt-custom-class")
def _(ctx):
    buf = io.BytesIO()
    torch.save({"iteration": 1, "model": torch.nn.Linear(2, 2)}, buf)  # a whole module, not its weights
    (ctx.tmp / "module.pt").write_bytes(_wrap(buf.getvalue()))
    with pytest.raises(CheckpointError, match="objects other than tensors.*torch.nn.modules.linear.Linear.*"
                                              "do not load it with weights_only=False unless you trust"):
        load_checkpoint(ctx.tmp / "module.pt")


@case("ckpt-not-a-dict")  # a list payload gave an AttributeError traceback in `reptile eval`
def _(ctx):
    buf = io.BytesIO()
    torch.save([1, 2, 3], buf)
    (ctx.tmp / "list.pt").write_bytes(_wrap(buf.getvalue()))
    with pytest.raises(CheckpointError, match="holds a list, not the dict `reptile train` writes"):
        load_checkpoint(ctx.tmp / "list.pt")
    ctx.cli(["eval", ctx.tmp / "list.pt"], 1, "holds a list")


@case("ckpt-plain-torch-save")
def _(ctx):
    torch.save({"params": {}}, ctx.tmp / "plain.pt")
    with pytest.raises(CheckpointError, match="not a reptile-lab checkpoint.*written by `reptile train`"):
        load_checkpoint(ctx.tmp / "plain.pt")


@case("ckpt-of-another-model")
def _(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    out = ctx.tmp / "run"
    MetaTrainer(loss_fn, phi, lambda rng: (x, y), TrainConfig(iterations=1), out,
                model_spec=model_spec(model)).run(progress=False)
    other = MLP((1, 8, 1))
    t = MetaTrainer(make_loss(other), params_of(other), lambda rng: (x, y), TrainConfig(iterations=1), out,
                    model_spec=model_spec(other))
    with ctx.unchanged(), pytest.raises(ValueError, match="the checkpoint is of another model"):
        t.resume()


# --------------------------------------------------------------------------------------- demo server
@case("server-port-in-use")
def _(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} on 127.0.0.1 is already in use; choose another"):
            make_server("127.0.0.1", port)
    with pytest.raises(ValueError, match=r"port must be a whole number 0..65535"):  # was OverflowError
        make_server("127.0.0.1", 70000)


@case("server-dotdot-path")
def _(ctx):
    _refused(ctx.server, "/../secret.json", "/weights/../../secret.json", "/weights/../secret.json",
             "/../../../../etc/passwd")


@case("server-encoded-dotdot-path")
def _(ctx):
    _refused(ctx.server, "/%2e%2e/secret.json", "/weights/%2e%2e/secret.json", "/weights/..%2fsecret.json",
             "/%2E%2E/%2E%2E/etc/passwd", "/weights/..%5csecret.json", "/weights/sine.json%00.png")


@case("server-absolute-path")
def _(ctx):
    _refused(ctx.server, "//etc/passwd", "/weights//etc/passwd", "/%2fetc%2fpasswd", "/weights/%2Fetc/passwd",
             "/~root/.bashrc", "/C:/Windows/win.ini")


@case("server-symlink-out-of-folder")
def _(ctx):
    assert _get(ctx.server, "/weights/sine.json") == (200, b'{"format": "x"}')  # the folder itself is served
    status, body = _get(ctx.server, "/weights/link.json")
    assert status == 403 and b"TOPSECRET" not in body


# ----------------------------------------------------------------------------------- reptile verify
@case("verify-api-bad-mode")
def _(ctx):
    with ctx.unchanged(), pytest.raises(ValueError, match=r"unknown verify mode 'fast'; choose one of \('quick'"):
        run_verify("fast", ctx.tmp / "report")


@case("verify-api-bad-out-path")  # was NotADirectoryError
def _(ctx):
    f = ctx.afile()
    with ctx.unchanged(), pytest.raises(ValueError, match="out_dir .* is a file, not a folder; choose another"):
        run_verify("quick", f / "report", providers=["analysis.taylor_checks"])


# ------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch, sine_run, server):
    monkeypatch.chdir(tmp_path)  # a default output folder (runs/, reports/verify) would land here
    CASES[name](Ctx(tmp_path, capsys, monkeypatch, sine_run, server))
    assert not _temporaries(tmp_path), _temporaries(tmp_path)


@pytest.mark.parametrize("count", [len(CASES)], ids=[f"{len(CASES)}-cases"])
def test_case_count(count):
    assert count >= 30
