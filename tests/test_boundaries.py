"""Issue 18 item 7: no hang and no traceback at the boundary (peers, sizes, devices, seeds, threads,
images, caches)."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reptile.cli import main
from reptile.data import ImageLoadError, load_image
from reptile.data.glyphs import build_glyphs
from reptile.models import MLP, OmniglotCNN, seeded_init

SINE = ["train", "sine", "--iterations", "1", "--eval-tasks", "1", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_torchrun_rank_without_peers_gives_up_with_a_message(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()), REPTILE_DIST_TIMEOUT="2")
    proc = subprocess.run([sys.executable, "-m", "reptile", *SINE, "--meta-batch", "2", "--hidden", "4",
                           "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "rank 0 of 2 waited 2 s for the other ranks to join" in proc.stderr
    assert "REPTILE_DIST_TIMEOUT" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv, needle, code", [
    (["--hidden", "1000000,1000000"], "the model would need", 1),
    (["--points", str(10 ** 12)], "(--points) would need", 1),
    (["--inner-steps", str(10 ** 9)], "(--inner-steps x --inner-batch) would need", 1),
    (["--device", "meta"], "device 'meta' holds no data", 1),
    (["--seed", str(2 ** 70)], "--seed must be a whole number from 0 to 2**63-1", 1),
    (["--threads", "100000"], "100000 threads is more than the", 2),  # checked by the parser: a usage error
])
def test_sizes_devices_seeds_and_threads_are_clear_errors(argv, needle, code, tmp_path, capsys):
    out = tmp_path / "run"
    try:
        status = main([*SINE, "--out", str(out), *argv])
    except SystemExit as e:  # argparse's usage errors exit 2
        status = e.code
    assert status == code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert not out.exists()


def test_few_shot_ways_are_checked_before_any_data_is_loaded(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REPTILE_CACHE", str(tmp_path / "cache"))
    assert main(["train", "fewshot", "--ways", str(10 ** 9), "--iterations", "1", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "(--ways) would need" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()


def test_model_builders_refuse_sizes_beyond_memory_before_allocating():
    from reptile.limits import AllocationTooLarge
    with pytest.raises(AllocationTooLarge, match="the model would need .* TB"):
        seeded_init(0, lambda: OmniglotCNN(filters=10 ** 6))
    with pytest.raises(AllocationTooLarge, match="use smaller sizes"):
        seeded_init(0, lambda: MLP((1, 10 ** 6, 10 ** 6, 1)))
    assert seeded_init(0, lambda: MLP((1, 4, 1))) is not None


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` 1-bit pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10_000, 100_000])  # 100 million pixels (Pillow warns), 10 billion (it refuses)
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, side, side)
    with pytest.raises(ImageLoadError, match=rf"bomb.png: it (has {side} x {side} pixels|is too large)"):
        load_image(bomb)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.array([[0, 255, 255]], dtype=np.uint8), mode="L")  # 3 wide, 1 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer rotates it 90 degrees clockwise
    p = tmp_path / "rotated.png"
    img.save(p, exif=exif)
    arr = load_image(p, dtype="uint8")
    assert arr.shape == (3, 1)  # shown 1 wide, 3 high
    assert arr[:, 0].tolist() == [0, 255, 255]


SMALL = dict(fonts="matplotlib", scripts=("Greek",), max_chars_per_script=8, min_chars_per_script=4, n_instances=2)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"])
def test_an_empty_or_corrupt_glyph_cache_is_a_named_error(tmp_path, content):
    path = build_glyphs(seed=0, cache_dir=tmp_path, **SMALL).path
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"glyph cache .* is unreadable .*delete it, or rebuild it"):
        build_glyphs(seed=0, cache_dir=tmp_path, **SMALL)
    assert build_glyphs(seed=0, cache_dir=tmp_path, rebuild=True, **SMALL).n_chars > 0
