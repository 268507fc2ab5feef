"""``reptile glyphs build`` / ``reptile glyphs sheet`` through their argparse registration."""
from __future__ import annotations

import argparse

import pytest

from reptile.cli import data as data_cli

SMALL = ["--fonts", "matplotlib", "--scripts", "Greek,Armenian,Hebrew", "--max-chars", "8", "--no-progress"]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reptile")
    sub = parser.add_subparsers(dest="command", required=True)
    data_cli.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_build_prints_counts(tmp_path, capsys):
    assert _run(["glyphs", "build", "--cache-dir", str(tmp_path), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "24 characters from 3 scripts" in out and "480 images" in out
    assert "train" in out and "test" in out and "generated in" in out
    assert _run(["glyphs", "build", "--cache-dir", str(tmp_path), *SMALL]) == 0
    assert "loaded from cache" in capsys.readouterr().out
    assert _run(["glyphs", "build", "--cache-dir", str(tmp_path), "--rebuild", *SMALL]) == 0
    assert "generated in" in capsys.readouterr().out


def test_sheet_writes_png(tmp_path):
    out = tmp_path / "sheets" / "glyphs.png"
    code = _run(["glyphs", "sheet", "--cache-dir", str(tmp_path), "--out", str(out), "--split", "train",
                 "--tasks", "2", "--ways", "3", "--shots", "2", *SMALL])
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_usage_errors(tmp_path):
    with pytest.raises(SystemExit):
        _run(["glyphs", "build", "--max-chars", "0"])
    with pytest.raises(SystemExit):
        _run(["glyphs", "sheet"])  # --out is required
    with pytest.raises(ValueError, match="not covered"):
        _run(["glyphs", "build", "--cache-dir", str(tmp_path), "--fonts", "matplotlib", "--scripts", "Klingon"])
