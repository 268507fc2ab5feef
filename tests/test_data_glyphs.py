"""The font-rendered glyph set: determinism, counts, filters, cache, split by script.

Small sets from the fonts that ship with matplotlib (always installed) keep these fast; the
full-size check with Noto fonts is marked slow and skipped when fonts-noto-core is missing.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from reptile.data.glyphs import (
    GlyphConfig,
    _is_candidate,
    _Renderer,
    _select_characters,
    build_glyphs,
    find_fonts,
    font_files,
    glyph_stats,
    load_glyphs,
    split_scripts,
)

SMALL = dict(fonts="matplotlib", scripts=("Greek", "Armn", "Hebrew"), max_chars_per_script=10, min_chars_per_script=8)


@pytest.fixture(scope="module")
def small_archive():
    return build_glyphs(seed=0, save=False, **SMALL)


def test_shapes_counts_and_ink(small_archive):
    a = small_archive
    assert a.images.shape == (30, 20, 28, 28) and a.images.dtype == np.uint8
    assert sorted(set(a.script_names)) == ["Armenian", "Greek", "Hebrew"]
    assert all(a.script_names.count(s) == 10 for s in set(a.script_names))
    assert len(set(a.codepoints.tolist())) == 30
    ds = a.to_dataset()
    assert ds.n_classes == 30 and len(ds) == 600
    imgs = np.stack(ds.images)
    assert imgs.dtype == np.float32 and imgs.min() >= 0 and imgs.max() <= 1
    assert (imgs[..., 0, :].mean() > 0.95) and (imgs[..., :, 0].mean() > 0.95)  # light background at the border
    ink = (1 - imgs).sum(axis=(2, 3))
    assert ink.min() > 10  # every instance has ink (dark strokes)
    assert all(name.split("/")[1].startswith("U+") for name in ds.class_names)


def test_same_seed_same_bytes_different_seed_differs(tmp_path, small_archive):
    b = build_glyphs(seed=0, cache_dir=tmp_path / "one", **SMALL)
    c = build_glyphs(seed=0, cache_dir=tmp_path / "two", **SMALL)
    assert b.images.tobytes() == small_archive.images.tobytes()
    digest = [hashlib.sha256(x.path.read_bytes()).hexdigest() for x in (b, c)]
    assert digest[0] == digest[1]  # the cache files themselves are byte-identical
    d = build_glyphs(seed=1, save=False, **SMALL)
    assert d.codepoints.tolist() == b.codepoints.tolist()  # characters do not depend on the seed
    assert d.images.tobytes() != b.images.tobytes()  # their drawings do
    assert (d.images != b.images).mean() > 0.05


def test_instances_do_not_depend_on_other_characters(small_archive):
    only_hebrew = build_glyphs(seed=0, save=False, **{**SMALL, "scripts": ("Hebr",)})
    rows = np.flatnonzero(np.isin(small_archive.codepoints, only_hebrew.codepoints))
    assert len(rows) == only_hebrew.n_chars
    np.testing.assert_array_equal(small_archive.images[rows], only_hebrew.images)


def test_instances_vary_like_drawers(small_archive):
    a = small_archive
    per_char = a.images.astype(np.float32).std(axis=1).mean()
    assert per_char > 20  # the 20 instances of one character differ (jitter, stroke, face)
    assert np.mean([len(set(r.tolist())) for r in a.faces]) > 2  # several font faces per character


def test_cache_roundtrip_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("REPTILE_CACHE", str(tmp_path / "envcache"))
    a = build_glyphs(seed=2, **SMALL)
    assert a.path is not None and a.path.parent == tmp_path / "envcache" and not a.from_cache
    b = build_glyphs(seed=2, **SMALL)
    assert b.from_cache and b.path == a.path
    np.testing.assert_array_equal(a.images, b.images)
    assert b.script_names == a.script_names and b.codepoints.tolist() == a.codepoints.tolist()
    c = build_glyphs(seed=2, rebuild=True, **SMALL)
    assert not c.from_cache
    other = build_glyphs(seed=2, cache_dir=tmp_path / "arg", **SMALL)  # the argument overrides the env
    assert other.path.parent == tmp_path / "arg"
    a.path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="rebuild"):
        build_glyphs(seed=2, **SMALL)


def test_load_glyphs_splits_by_script(tmp_path):
    out = load_glyphs(seed=0, cache_dir=tmp_path, **SMALL)
    assert set(out) == {"train", "val", "test"}
    groups = [set(out[s].groups) for s in ("train", "val", "test")]
    assert all(groups) and not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sum(out[s].n_classes for s in out) == 30
    rotated = load_glyphs(seed=0, cache_dir=tmp_path, augment_rotations=True, **SMALL)
    assert rotated["train"].n_classes == 4 * out["train"].n_classes
    assert rotated["test"].n_classes == out["test"].n_classes  # rotations for meta-training only
    stats = glyph_stats(out)
    assert stats["characters"] == 30 and stats["scripts"] == 3 and stats["images"] == 600


def test_split_scripts_fractions_and_seed():
    sizes = {f"s{i}": 10 + i for i in range(30)}
    a = split_scripts(sizes, seed=0)
    assert sorted(sum(a.values(), [])) == sorted(sizes)
    total = sum(sizes.values())
    test_share = sum(sizes[s] for s in a["test"]) / total
    assert 0.2 <= test_share < 0.2 + 40 / total
    assert split_scripts(sizes, seed=0) == a and split_scripts(sizes, seed=1) != a
    with pytest.raises(ValueError, match="fractions"):
        split_scripts(sizes, 0, (0.5, 0.5, 0.5))


def test_candidate_filters():
    covered = {ord(c) for c in "AaBbEeÉéʌvΣσςЖж"} | {0x0406, 0x04C0}
    keep = {c for c in "ABEΣЖ"}
    for ch in "AaBbEeÉéʌΣσςЖж":
        assert _is_candidate(ord(ch), covered) == (ch in keep), ch
    assert not _is_candidate(ord("1"), covered)  # not a letter
    assert not _is_candidate(0x0378, covered)  # unassigned code point


def test_notdef_and_empty_are_rejected():
    fonts = find_fonts("matplotlib")
    assert not any("LastResort" in f.name or f.name.startswith("cm") for f in fonts)
    sans = next(f for f in fonts if f.name == "DejaVuSans.ttf")
    r = _Renderer()
    assert r.render(sans.path, "A") is not None
    assert r.render(sans.path, " ") is None  # empty
    missing = next(cp for cp in range(0x1000, 0x3000) if cp not in sans.codepoints and chr(cp).isalpha())
    assert r.render(sans.path, chr(missing)) is None  # drawn as .notdef


def test_near_duplicates_are_dropped():
    fonts = find_fonts("matplotlib")
    cfg = GlyphConfig(scripts=("Cyrillic",), max_chars_per_script=400, min_chars_per_script=1)
    chosen = {cp for _, _, cp, _ in _select_characters(fonts, cfg, _Renderer(), progress=False)}
    assert 0x0416 in chosen  # Zhe
    assert not {0x0406, 0x04C0} <= chosen  # Byelorussian-Ukrainian I and palochka draw the same bar
    no_dedupe = GlyphConfig(**{**cfg.__dict__, "dedupe_max_pixels": -1})
    everything = {cp for _, _, cp, _ in _select_characters(fonts, no_dedupe, _Renderer(), progress=False)}
    assert {0x0406, 0x04C0} <= everything  # both are drawable: the image comparison dropped one


def test_fallback_fonts_and_errors():
    assert all(p.name.startswith(("DejaVu", "STIXGeneral")) for p in font_files("matplotlib"))
    with pytest.raises(ValueError, match="fonts must be"):
        font_files("comic")
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        font_files(["/nonexistent/font.ttf"])
    with pytest.raises(ValueError, match="not covered"):
        build_glyphs(save=False, fonts="matplotlib", scripts=("Klingon",))
    with pytest.raises(ValueError, match="min_chars_per_script"):
        GlyphConfig(min_chars_per_script=60, max_chars_per_script=55)


@pytest.mark.slow
def test_noto_offers_1200_characters_from_25_scripts():
    try:
        fonts = find_fonts("noto")
    except FileNotFoundError:
        pytest.skip("fonts-noto-core is not installed")
    chosen = _select_characters(fonts, GlyphConfig(), _Renderer(), progress=False)
    assert len(chosen) >= 1200
    assert len({code for code, _, _, _ in chosen}) >= 25
