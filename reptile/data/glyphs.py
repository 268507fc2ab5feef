"""An Omniglot-shaped dataset generated from fonts: characters of real writing systems.

Omniglot (Lake et al., 2015; the few-shot benchmark of MAML and Reptile) has 1623 characters
from 50 alphabets, each drawn once by 20 different people, stored as 105x105 binary images and
used at 28x28 with black ink on a white background. It cannot be downloaded here, so this module
renders a stand-in with the same shape:

* a character = one Unicode letter (general category Lu/Ll/Lt/Lo) of a writing system; an
  alphabet = a Unicode script (``fontTools.unicodedata.script``, i.e. the Unicode Character
  Database's Scripts.txt); Common/Inherited code points are left out;
* near-duplicates are dropped: precomposed and compatibility forms (any
  ``unicodedata.decomposition``), "... WITH ..." letters, turned/reversed/inverted/small-capital
  variants and ligatures (by Unicode name), the later code point of each case pair (so ``A`` but
  not ``a``), glyphs that render empty or as the font's ``.notdef`` box, and glyphs whose clean
  28x28 rendering is almost identical to an earlier glyph of the same script;
* 20 instances per character, different the way Omniglot's 20 drawers are: the font face (every
  installed face that covers the script: Sans/Serif/Kufi/Naskh/Looped..., regular/bold/italic),
  stroke width (the face's weight, then a grey dilation by 0.5 or 1 output pixel), an affine
  jitter (rotation, shear, scale, aspect, translation) and a mild elastic wobble (a smooth random
  displacement field, applied with ``scipy.ndimage.map_coordinates`` together with the affine
  map, at twice the resolution and then averaged down);
* images are 28x28 float32 in [0, 1], ink 0.0 on background 1.0 (uint8 in the cache);
* the split is by script (alphabet) into meta-train / validation / meta-test, seeded, so test
  tasks are new characters of new scripts (Omniglot's background/evaluation alphabets are split
  the same way; the Reptile code instead splits Omniglot's characters 1200/423 at random).

With Debian's ``fonts-noto-core`` (``apt-get install fonts-noto-core``) this gives thousands of
characters from well over 100 scripts; without it the DejaVu and STIX fonts that ship with
matplotlib give a much smaller set (see :func:`glyph_stats` and docs/data.md for measured counts).

Everything is deterministic from one seed (``numpy.random.default_rng``; no global RNG): instance
``j`` of character ``cp`` uses ``default_rng([seed, 0, cp])``, so it does not depend on which other
characters are built, and the split uses ``default_rng([seed, 1])``. The set is generated once and
cached as an ``.npz`` under ``$REPTILE_CACHE`` (default ``~/.cache/reptile-lab``); the file name
hashes every generation setting and the list of font files, so a different font installation
builds a different file. Same fonts, same seed, same library versions: byte-identical files.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from reptile.data.images import ImageClassDataset, rotate_classes

__all__ = [
    "GlyphConfig",
    "GlyphArchive",
    "FontSpec",
    "build_glyphs",
    "load_glyphs",
    "glyph_stats",
    "split_scripts",
    "find_fonts",
    "font_files",
    "default_cache_dir",
    "NOTO_FONT_DIRS",
]

FORMAT_VERSION = 1
IMAGE_SIZE = 28
_SUPERSAMPLE = 2  # warp at 56x56, then average 2x2 blocks (antialiasing)
_RENDER_PX = 64  # font size (pixels per em) of the source renderings
_LETTER_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lo"})
_NON_SCRIPTS = frozenset({"Zyyy", "Zinh", "Zzzz"})  # Common, Inherited, Unknown
# Unicode-name fragments of letters that are variants of other letters.
_VARIANT_NAME_PARTS = (
    " WITH ",
    "SMALL CAPITAL",
    "TURNED",
    "REVERSED",
    "INVERTED",
    "SIDEWAYS",
    "LIGATURE",
    "MODIFIER",
    "SUBSCRIPT",
    "SUPERSCRIPT",
)
# Font files that are not faces of a writing system (placeholders, maths, music, TeX encodings).
_EXCLUDED_FONT_PARTS = (
    "lastresort",
    "display",  # Noto Sans/Serif Display: near-copies of Noto Sans/Serif, with hairline strokes
    "math",
    "music",
    "symbols",
    "emoji",
    "signwriting",
    "mayannumerals",
    "siyaqnumbers",
    "stixsiz",
    "stixnonuni",
)
_EXCLUDED_FONT_PREFIXES = ("cm",)  # matplotlib's Computer Modern files use TeX encodings

#: Directories searched for Noto fonts (``Noto*.ttf`` / ``Noto*.otf``), recursively.
NOTO_FONT_DIRS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/noto",
    "/usr/share/fonts/opentype/noto",
    "/usr/share/fonts/noto",
    "/usr/share/fonts/google-noto",
    "/usr/share/fonts/google-noto-vf",
    "/usr/local/share/fonts",
    "~/.local/share/fonts",
    "~/.fonts",
    "/Library/Fonts",
    "~/Library/Fonts",
)


def default_cache_dir() -> Path:
    """``$REPTILE_CACHE`` if set, else ``~/.cache/reptile-lab``."""
    env = os.environ.get("REPTILE_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/reptile-lab").expanduser()


# --------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class GlyphConfig:
    """Every setting that changes the generated images (all of it goes into the cache key).

    Sizes are in pixels of the 28x28 output. Defaults give Omniglot-like variation; each
    instance draws its own value of every jitter.

    Attributes:
        n_instances: drawings per character (Omniglot: 20 drawers).
        max_chars_per_script: cap on characters per script (Omniglot's alphabets have 14-55);
            larger scripts keep their first Unicode blocks, the overflowing block subsampled
            evenly (not seeded; see ``_block_first``).
        min_chars_per_script: scripts with fewer usable characters are dropped.
        scripts: restrict to these scripts (ISO 15924 codes like ``"Grek"`` or names like
            ``"Greek"``); ``None`` for all.
        max_scripts: keep only the first ``max_scripts`` scripts in alphabetical order of name.
        target_size: size of the longer side of a glyph's ink box before the scale jitter.
        rotation_deg: rotation drawn uniformly in ``[-r, r]`` degrees.
        shear: horizontal shear factor drawn uniformly in ``[-s, s]``.
        scale_range: overall scale factor range.
        aspect_jitter: log aspect ratio drawn uniformly in ``[-a, a]``.
        translate_px: translation drawn uniformly in ``[-t, t]`` on each axis.
        elastic_px: standard deviation of the smooth displacement field (elastic wobble).
        elastic_nodes: the field is an interpolation of ``nodes x nodes`` random vectors.
        stroke_px: stroke-width changes (in output pixels, total across a stroke) to choose from;
            negative thins, positive thickens.
        stroke_probs: probabilities of ``stroke_px``.
        dedupe_max_pixels: a glyph whose clean 28x28 rendering differs from an earlier kept glyph
            of its script in at most this many pixels (by more than 0.3) is a near-duplicate and
            dropped. Measured: true duplicates (Latin Ð/Ɖ, Cyrillic І/Ӏ, Arabic ه/ە) differ in 0-1
            pixels, letters told apart by one dot (Arabic ط/ظ, ج/ح) in 4 or more.
        face_coverage: a font file is a face of a script when its cmap covers at least this
            fraction of the script's candidate characters.
    """

    n_instances: int = 20
    max_chars_per_script: int = 55
    min_chars_per_script: int = 14
    scripts: tuple[str, ...] | None = None
    max_scripts: int | None = None
    target_size: float = 20.0
    rotation_deg: float = 10.0
    shear: float = 0.2
    scale_range: tuple[float, float] = (0.8, 1.1)
    aspect_jitter: float = 0.12
    translate_px: float = 1.5
    elastic_px: float = 0.7
    elastic_nodes: int = 4
    stroke_px: tuple[float, ...] = (0.5, 1.0)
    stroke_probs: tuple[float, ...] = (0.6, 0.4)
    dedupe_max_pixels: int = 2
    face_coverage: float = 0.4

    def __post_init__(self) -> None:
        if self.n_instances < 2:
            raise ValueError(f"n_instances must be >= 2 (train and test shots), got {self.n_instances}")
        if not 1 <= self.min_chars_per_script <= self.max_chars_per_script:
            raise ValueError(
                f"need 1 <= min_chars_per_script <= max_chars_per_script, got "
                f"{self.min_chars_per_script} and {self.max_chars_per_script}"
            )
        if len(self.stroke_px) != len(self.stroke_probs) or abs(sum(self.stroke_probs) - 1) > 1e-6:
            raise ValueError("stroke_probs must have one probability per stroke_px value, summing to 1")
        if self.max_scripts is not None and self.max_scripts < 1:
            raise ValueError(f"max_scripts must be >= 1 or None, got {self.max_scripts}")
        if self.scripts is not None:
            object.__setattr__(self, "scripts", tuple(self.scripts))


# ---------------------------------------------------------------------------------------- fonts
@dataclass(frozen=True)
class FontSpec:
    """A font file and the code points its cmap maps (read with fontTools)."""

    path: str
    name: str
    size_bytes: int
    codepoints: frozenset[int] = field(repr=False)


def _font_excluded(name: str) -> bool:
    low = name.lower()
    return any(p in low for p in _EXCLUDED_FONT_PARTS) or low.startswith(_EXCLUDED_FONT_PREFIXES)


def _matplotlib_font_files() -> list[Path]:
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(p for p in root.glob("*.ttf") if p.name.startswith(("DejaVu", "STIXGeneral")))


def _noto_font_files() -> list[Path]:
    found: dict[str, Path] = {}
    for d in NOTO_FONT_DIRS:
        root = Path(d).expanduser()
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("Noto*")):
            if p.suffix.lower() in (".ttf", ".otf") and p.name not in found:
                found[p.name] = p
    return [found[k] for k in sorted(found)]


def font_files(fonts: str | Sequence[str | os.PathLike[str]] = "auto") -> list[Path]:
    """The font files the glyph set is rendered from (without opening them).

    Args:
        fonts: ``"auto"`` (Noto fonts if any are installed, plus matplotlib's DejaVu and STIX),
            ``"noto"`` (Noto only), ``"matplotlib"`` (DejaVu and STIX shipped with matplotlib),
            or a list of font files and/or directories (searched for ``*.ttf``/``*.otf``).
            Placeholder, maths, music, symbol, display-size and TeX-encoded fonts are left out.

    Returns:
        Paths sorted by file name, one per file name.

    Raises:
        FileNotFoundError: ``"noto"`` with no Noto font installed, or a listed path missing.
        ValueError: an unknown keyword, or no usable font at all.
    """
    files: list[Path]
    if isinstance(fonts, str):
        if fonts == "auto":
            files = _noto_font_files() + _matplotlib_font_files()
        elif fonts == "noto":
            files = _noto_font_files()
            if not files:
                raise FileNotFoundError(
                    "no Noto fonts found in " + ", ".join(NOTO_FONT_DIRS)
                    + "; install them (Debian/Ubuntu: apt-get install fonts-noto-core) or use fonts='auto'"
                )
        elif fonts == "matplotlib":
            files = _matplotlib_font_files()
        else:
            raise ValueError(f"fonts must be 'auto', 'noto', 'matplotlib' or a list of paths, got {fonts!r}")
    else:
        files = []
        for item in fonts:
            p = Path(item).expanduser()
            if p.is_dir():
                files.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in (".ttf", ".otf")))
            elif p.is_file():
                files.append(p)
            else:
                raise FileNotFoundError(f"font file or directory not found: {p}")
    chosen: dict[str, Path] = {}
    for p in files:
        if p.name not in chosen and not _font_excluded(p.name):
            chosen[p.name] = p
    if not chosen:
        raise ValueError(f"no usable font files for fonts={fonts!r}")
    return [chosen[k] for k in sorted(chosen)]


def find_fonts(fonts: str | Sequence[str | os.PathLike[str]] = "auto") -> list[FontSpec]:
    """:func:`font_files` with each file's cmap (the code points it draws), read with fontTools.

    Raises:
        FileNotFoundError, ValueError: as :func:`font_files`; ValueError also for a font file
            fontTools cannot read.
        ImportError: fontTools (a dependency of matplotlib) is missing.
    """
    try:
        from fontTools.ttLib import TTFont
    except ImportError as exc:  # pragma: no cover - fontTools comes with matplotlib
        raise ImportError("the glyph dataset reads font cmaps with fontTools: pip install fonttools") from exc
    specs = []
    for p in font_files(fonts):
        try:
            with TTFont(str(p), lazy=True) as tt:
                cmap = tt.getBestCmap() or {}
        except Exception as exc:  # fontTools raises many types on a broken file
            raise ValueError(f"cannot read font {p}: {type(exc).__name__}: {exc}") from exc
        specs.append(FontSpec(str(p), p.name, p.stat().st_size, frozenset(cmap)))
    return specs


def _face_rank(name: str) -> tuple[int, int, str]:
    low = name.lower()
    styled = any(s in low for s in ("bold", "italic", "oblique", "ita", "bol"))
    return (int(styled), int("sans" not in low), name)


# ----------------------------------------------------------------------------------- characters
def _script_code_and_name(ch: str) -> tuple[str, str]:
    from fontTools import unicodedata as fu

    code = fu.script(ch)
    return code, fu.script_name(code)


def _is_candidate(cp: int, covered: frozenset[int] | set[int]) -> bool:
    ch = chr(cp)
    if unicodedata.category(ch) not in _LETTER_CATEGORIES:
        return False
    if unicodedata.decomposition(ch):
        return False
    name = unicodedata.name(ch, "")
    if not name or any(part in name for part in _VARIANT_NAME_PARTS):
        return False
    for twin in (ch.lower(), ch.upper()):
        if twin != ch and len(twin) == 1 and ord(twin) < cp and ord(twin) in covered:
            return False  # keep only the lower code point of a case pair
    return True


def _even_subsample(items: Sequence[int], k: int) -> list[int]:
    """``k`` items spread evenly over ``items`` (all of them if there are at most ``k``)."""
    if len(items) <= k:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def _block_first(codepoints: Sequence[int], k: int) -> list[int]:
    """Up to ``k`` code points, preferring a script's first Unicode blocks.

    Whole blocks are taken in code-point order (Basic Latin before Latin Extended-A, Cyrillic
    before Cyrillic Extended-B, ...) while they fit; the block that would overflow ``k`` is
    subsampled evenly, so a large syllabary (Ethiopic, Yi) is spread over its consonants rather
    than cut after the first few. Deterministic and seed-independent.
    """
    from fontTools import unicodedata as fu

    blocks: dict[str, list[int]] = {}
    for cp in sorted(codepoints):
        blocks.setdefault(fu.block(chr(cp)), []).append(cp)
    out: list[int] = []
    for members in blocks.values():
        room = k - len(out)
        if room <= 0:
            break
        out.extend(_even_subsample(members, room))
    return sorted(out)


# ------------------------------------------------------------------------------------ rendering
class _Renderer:
    """Renders characters with PIL (basic layout, no shaping: one code point at a time)."""

    def __init__(self) -> None:
        self._fonts: dict[str, ImageFont.FreeTypeFont] = {}
        self._notdef: dict[str, np.ndarray | None] = {}

    def font(self, path: str) -> ImageFont.FreeTypeFont:
        f = self._fonts.get(path)
        if f is None:
            try:
                f = ImageFont.truetype(path, size=_RENDER_PX, layout_engine=ImageFont.Layout.BASIC)
            except OSError as exc:
                raise ValueError(f"cannot load font {path}: {exc}") from exc
            self._fonts[path] = f
        return f

    def raw(self, path: str, ch: str) -> np.ndarray | None:
        """Ink coverage in [0, 1] cropped to the ink's box, or None if nothing is drawn."""
        font = self.font(path)
        left, top, right, bottom = font.getbbox(ch)
        w, h = right - left, bottom - top
        if w <= 0 or h <= 0:
            return None
        pad = 2
        img = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
        ImageDraw.Draw(img).text((pad - left, pad - top), ch, font=font, fill=255)
        arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        rows, cols = np.nonzero(arr > 0.02)
        if len(rows) == 0:
            return None
        return arr[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]

    def render(self, path: str, ch: str) -> np.ndarray | None:
        """Like :meth:`raw`, but None also for near-empty glyphs and for the ``.notdef`` box."""
        arr = self.raw(path, ch)
        if arr is None or arr.sum() < 8.0:  # < 8 fully inked pixels at 64 px/em: empty
            return None
        if path not in self._notdef:
            self._notdef[path] = self.raw(path, "\uffff")  # a noncharacter: always .notdef
        nd = self._notdef[path]
        if nd is not None and nd.shape == arr.shape and np.abs(nd - arr).mean() < 0.02:
            return None
        return arr


def _smooth_basis(grid: int, nodes: int) -> np.ndarray:
    """``[grid, nodes]`` Gaussian interpolation weights: a field ``B @ C @ B.T`` is smooth."""
    centers = np.linspace(0, grid - 1, nodes)
    width = (grid - 1) / max(nodes - 1, 1)
    x = np.arange(grid)[:, None]
    b = np.exp(-0.5 * ((x - centers[None, :]) / (0.6 * width)) ** 2)
    b /= np.sqrt((b**2).sum(axis=1, keepdims=True))  # unit-norm rows: field std ~ node std
    return b


@dataclass(frozen=True, eq=False)
class _Jitters:
    """Distortions of ``n`` instances (arrays of length ``n``; angles in radians)."""

    angle: np.ndarray
    shear: np.ndarray
    scale: np.ndarray
    log_aspect: np.ndarray
    ty: np.ndarray
    tx: np.ndarray
    stroke: np.ndarray
    field: np.ndarray | None  # [n, 2, G, G] displacement (y, x) in output pixels, G = 56

    @staticmethod
    def identity(n: int = 1) -> "_Jitters":
        z = np.zeros(n)
        return _Jitters(z, z, np.ones(n), z, z, z, z, None)


def _draw_jitters(rng: np.random.Generator, n: int, cfg: GlyphConfig, basis: np.ndarray) -> _Jitters:
    """Per-instance distortion parameters (the Omniglot "drawer" variation)."""
    r = np.deg2rad(cfg.rotation_deg)
    angle = rng.uniform(-r, r, n)
    shear = rng.uniform(-cfg.shear, cfg.shear, n)
    scale = rng.uniform(cfg.scale_range[0], cfg.scale_range[1], n)
    log_aspect = rng.uniform(-cfg.aspect_jitter, cfg.aspect_jitter, n)
    ty = rng.uniform(-cfg.translate_px, cfg.translate_px, n)
    tx = rng.uniform(-cfg.translate_px, cfg.translate_px, n)
    stroke = np.asarray(cfg.stroke_px, dtype=np.float64)[
        rng.choice(len(cfg.stroke_px), size=n, p=np.asarray(cfg.stroke_probs))
    ]
    k = cfg.elastic_nodes
    nodes = rng.normal(0.0, cfg.elastic_px, size=(n, 2, k, k))
    fld = basis @ nodes @ basis.T if cfg.elastic_px > 0 else None
    return _Jitters(angle, shear, scale, log_aspect, ty, tx, stroke, fld)


def _warp(sources: Sequence[np.ndarray], which: np.ndarray, jit: _Jitters, target: float) -> np.ndarray:
    """Map cropped source glyphs to 28x28 ink images (1 = ink), one per instance.

    Instance ``j`` draws ``sources[which[j]]``: its ink box is centred and scaled so that its
    longer side spans ``target`` pixels, then the affine jitter (rotation, shear, scale, aspect,
    translation) and the smooth displacement field are applied in a single bilinear resampling
    at 2x resolution, the stroke width is changed by grey dilation/erosion, and 2x2 blocks are
    averaged.

    Returns:
        float32 ``[len(which), 28, 28]`` in [0, 1].
    """
    g = IMAGE_SIZE * _SUPERSAMPLE
    n = len(which)
    hs = np.array([s.shape[0] for s in sources], dtype=np.float64)[which]
    ws = np.array([s.shape[1] for s in sources], dtype=np.float64)[which]
    # output pixel centres in output pixels relative to the image centre
    o = (np.arange(g, dtype=np.float64) + 0.5) / _SUPERSAMPLE - IMAGE_SIZE / 2
    oy = np.broadcast_to(o[None, :, None], (n, g, g))
    ox = np.broadcast_to(o[None, None, :], (n, g, g))
    if jit.field is not None:
        oy = oy + jit.field[:, 0]
        ox = ox + jit.field[:, 1]
    oy = oy - jit.ty[:, None, None]
    ox = ox - jit.tx[:, None, None]
    # forward map (y, x) source -> output: M = R(angle) @ Shear @ diag(sy, sx); apply M^-1
    ca, sa = np.cos(jit.angle), np.sin(jit.angle)
    a = np.exp(jit.log_aspect / 2)
    sy_, sx_ = jit.scale / a, jit.scale * a
    m = np.empty((n, 2, 2))
    m[:, 0, 0] = ca * sy_ - sa * jit.shear * sy_
    m[:, 0, 1] = -sa * sx_
    m[:, 1, 0] = sa * sy_ + ca * jit.shear * sy_
    m[:, 1, 1] = ca * sx_
    inv = np.linalg.inv(m)
    fit = target / np.maximum(hs, ws)  # output pixels per source pixel
    c = 1.0 / fit[:, None, None]
    sy = (inv[:, 0, 0, None, None] * oy + inv[:, 0, 1, None, None] * ox) * c + ((hs - 1) / 2)[:, None, None]
    sx = (inv[:, 1, 0, None, None] * oy + inv[:, 1, 1, None, None] * ox) * c + ((ws - 1) / 2)[:, None, None]
    ink = np.empty((n, g, g), dtype=np.float32)
    for i, src in enumerate(sources):
        sel = np.flatnonzero(which == i)
        if len(sel):
            ink[sel] = ndimage.map_coordinates(
                src, [sy[sel], sx[sel]], order=1, mode="constant", cval=0.0, prefilter=False
            )
    for value in np.unique(jit.stroke):
        if value == 0:
            continue
        sel = np.flatnonzero(jit.stroke == value)
        size = (1, int(round(abs(value) * _SUPERSAMPLE)) + 1, int(round(abs(value) * _SUPERSAMPLE)) + 1)
        if value > 0:
            ink[sel] = ndimage.grey_dilation(ink[sel], size=size)
        else:
            thinner = ndimage.grey_erosion(ink[sel], size=size)
            ok = thinner.sum(axis=(1, 2)) > 0.5 * ink[sel].sum(axis=(1, 2))  # never erase thin strokes
            ink[sel[ok]] = thinner[ok]
    ink = ink.reshape(n, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean(axis=(2, 4))
    return np.clip(ink, 0.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------- archive
@dataclass(frozen=True, eq=False)
class GlyphArchive:
    """The generated glyph set before splitting (what the cache file holds).

    Attributes:
        images: uint8 ``[n_chars, n_instances, 28, 28]``, 0 = ink, 255 = background.
        codepoints: int64 ``[n_chars]``, the character of each row.
        scripts: ISO 15924 code of each character's script (e.g. ``"Grek"``).
        script_names: Unicode name of each character's script (e.g. ``"Greek"``).
        faces: int16 ``[n_chars, n_instances]``: index into ``fonts`` of each instance's face.
        fonts: file names of the fonts used.
        config: the :class:`GlyphConfig` it was built with, and ``seed``.
        path: the cache file (None if not saved).
        from_cache: whether it was read from an existing cache file rather than generated.
    """

    images: np.ndarray
    codepoints: np.ndarray
    scripts: list[str]
    script_names: list[str]
    faces: np.ndarray
    fonts: list[str]
    config: GlyphConfig
    seed: int
    path: Path | None = None
    from_cache: bool = False

    @property
    def n_chars(self) -> int:
        return len(self.codepoints)

    @property
    def script_list(self) -> list[str]:
        """Distinct script names, sorted."""
        return sorted(set(self.script_names))

    def class_names(self) -> list[str]:
        """``"<Script>/U+XXXX"`` for each character."""
        return [f"{s}/U+{cp:04X}" for s, cp in zip(self.script_names, self.codepoints.tolist())]

    def to_dataset(self, dtype: Literal["float32", "uint8"] = "float32") -> ImageClassDataset:
        """All characters as one dataset: ``[n_instances, 28, 28]`` per class, ink 0.

        ``dtype="float32"`` gives values in [0, 1] (4 bytes a pixel: about 370 MB for the full
        Noto set); ``"uint8"`` keeps 0..255 (a quarter of that), converted when tensors are made.
        """
        if dtype == "uint8":
            imgs = self.images
        elif dtype == "float32":
            imgs = self.images.astype(np.float32)
            imgs *= np.float32(1.0 / 255.0)
        else:
            raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}")
        return ImageClassDataset(
            images=list(imgs), class_names=self.class_names(), groups=list(self.script_names)
        )


def _select_characters(
    fonts: list[FontSpec], cfg: GlyphConfig, renderer: _Renderer, progress: bool
) -> list[tuple[str, str, int, list[int]]]:
    """Choose the characters: ``[(script_code, script_name, codepoint, face_indices)]``.

    Seed-independent: depends only on the fonts and ``cfg``.
    """
    covered: set[int] = set().union(*(f.codepoints for f in fonts))
    by_script: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    for cp in sorted(covered):
        if not _is_candidate(cp, covered):
            continue
        code, name = _script_code_and_name(chr(cp))
        if code in _NON_SCRIPTS:
            continue
        by_script.setdefault(code, []).append(cp)
        names[code] = name
    if cfg.scripts is not None:
        wanted = {s.lower() for s in cfg.scripts}
        unknown = wanted - {c.lower() for c in by_script} - {n.lower() for n in names.values()}
        if unknown:
            raise ValueError(
                f"scripts {sorted(unknown)} are not covered by the fonts found; available: "
                + ", ".join(sorted(f"{names[c]} ({c})" for c in by_script))
            )
        by_script = {c: v for c, v in by_script.items() if c.lower() in wanted or names[c].lower() in wanted}
    order = sorted(by_script, key=lambda c: names[c])
    identity = _Jitters.identity(1)
    zero = np.zeros(1, dtype=np.int64)
    chosen: list[tuple[str, str, int, list[int]]] = []
    kept_scripts = 0
    iterator: Iterable[str] = order
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(order, desc="glyphs: choosing characters", unit="script")
    for code in iterator:
        if cfg.max_scripts is not None and kept_scripts >= cfg.max_scripts:
            break
        cands = by_script[code]
        cset = set(cands)
        faces = [
            i for i, f in enumerate(fonts) if len(cset & f.codepoints) >= cfg.face_coverage * len(cands)
        ]
        faces.sort(key=lambda i: _face_rank(fonts[i].name))
        if not faces:
            continue
        cands = _block_first(cands, 4 * cfg.max_chars_per_script)
        kept: list[tuple[int, list[int]]] = []
        kept_imgs: list[np.ndarray] = []
        for cp in cands:
            ch = chr(cp)
            cfaces = [i for i in faces if cp in fonts[i].codepoints]
            ref = None
            for k, i in enumerate(cfaces):  # the first face that draws it is the reference
                src = renderer.render(fonts[i].path, ch)
                if src is not None:
                    ref = _warp([src], zero, identity, cfg.target_size)[0]
                    cfaces = cfaces[k:]
                    break
            if ref is None:
                continue
            if kept_imgs:
                differing = (np.abs(np.stack(kept_imgs) - ref) > 0.3).sum(axis=(1, 2))
                if differing.min() <= cfg.dedupe_max_pixels:
                    continue  # a near-duplicate of a kept glyph (e.g. Cyrillic І and Ӏ)
            kept.append((cp, cfaces))
            kept_imgs.append(ref)
        if len(kept) < cfg.min_chars_per_script:
            continue
        faces_of = dict(kept)
        for cp in _block_first(list(faces_of), cfg.max_chars_per_script):
            chosen.append((code, names[code], cp, faces_of[cp]))
        kept_scripts += 1
    return chosen


def _generate(
    fonts: list[FontSpec], cfg: GlyphConfig, seed: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], np.ndarray]:
    renderer = _Renderer()
    chosen = _select_characters(fonts, cfg, renderer, progress)
    if not chosen:
        raise ValueError(
            "no characters survived selection (fonts cover no script with at least "
            f"{cfg.min_chars_per_script} usable letters); install fonts-noto-core or lower min_chars_per_script"
        )
    n = cfg.n_instances
    images = np.empty((len(chosen), n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    faces = np.empty((len(chosen), n), dtype=np.int16)
    basis = _smooth_basis(IMAGE_SIZE * _SUPERSAMPLE, cfg.elastic_nodes)
    iterator: Iterable[int] = range(len(chosen))
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="glyphs: rendering", unit="char")
    for r in iterator:
        _, _, cp, good = chosen[r]
        ch = chr(cp)
        rng = np.random.default_rng([seed, 0, cp])
        jitters = _draw_jitters(rng, n, cfg, basis)
        order = rng.permutation(len(good))
        sources: dict[int, np.ndarray] = {}
        failed: set[int] = set()
        while True:
            # spread the instances evenly over the faces that draw the character, in random order
            usable = [good[i] for i in order if good[i] not in failed]
            face_of = [usable[j % len(usable)] for j in range(n)]
            missing = [f for f in dict.fromkeys(face_of) if f not in sources]
            for f in missing:
                src = renderer.render(fonts[f].path, ch)
                if src is None:  # empty or .notdef in this face: never use it for this character
                    failed.add(f)
                else:
                    sources[f] = src
            if all(f in sources for f in face_of):
                break
        face_arr = np.array(face_of)[rng.permutation(n)]
        used = list(dict.fromkeys(face_arr.tolist()))
        slot = {f: i for i, f in enumerate(used)}
        ink = _warp([sources[f] for f in used], np.array([slot[f] for f in face_arr]), jitters, cfg.target_size)
        images[r] = np.round((1.0 - ink) * 255.0).astype(np.uint8)
        faces[r] = face_arr
    codepoints = np.array([c[2] for c in chosen], dtype=np.int64)
    return images, codepoints, [c[0] for c in chosen], [c[1] for c in chosen], faces


# ---------------------------------------------------------------------------------------- cache
def _cache_key(cfg: GlyphConfig, seed: int, fonts: list[Path]) -> str:
    payload = json.dumps(
        {
            "version": FORMAT_VERSION,
            "seed": int(seed),
            "config": asdict(cfg),
            "fonts": [(f.name, f.stat().st_size) for f in fonts],
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-reproducible (fixed zip timestamps), atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for key, arr in arrays.items():
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
                    info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk, an interrupt: no temporary is left for retries to add to
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write the glyph cache {path}: {exc.strerror or exc}; nothing was "
                                     f"left behind (free some space, or set REPTILE_CACHE to another folder)") from exc
        raise


class GlyphCacheError(ValueError):
    """A glyph cache file cannot be read (empty, truncated, corrupt)."""


def _read_archive(path: Path, cfg: GlyphConfig, seed: int) -> GlyphArchive:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return GlyphArchive(
                images=z["images"],
                codepoints=z["codepoints"].astype(np.int64),
                scripts=[str(s) for s in z["scripts"]],
                script_names=[str(s) for s in z["script_names"]],
                faces=z["faces"],
                fonts=list(meta["fonts"]),
                config=cfg,
                seed=seed,
                path=path,
                from_cache=True,
            )
    except Exception as exc:  # 0-byte, truncated, another program's file: np.load raises many kinds
        raise GlyphCacheError(f"glyph cache {path} is unreadable ({type(exc).__name__}: {exc}); delete it, or "
                              f"rebuild it (`reptile glyphs build --rebuild`, or rebuild=True)") from exc


def build_glyphs(
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
    fonts: str | Sequence[str | os.PathLike[str]] = "auto",
    config: GlyphConfig | None = None,
    progress: bool = False,
    save: bool = True,
    **config_overrides: Any,
) -> GlyphArchive:
    """Generate the glyph set (or read it from the cache) and return it unsplit.

    Args:
        seed: seeds every instance's distortions (and, in :func:`load_glyphs`, the split).
        cache_dir: where the ``.npz`` lives; default :func:`default_cache_dir`.
        rebuild: regenerate even if the cache file exists.
        fonts: see :func:`find_fonts`.
        config: generation settings; keyword overrides (e.g. ``max_chars_per_script=10``,
            ``scripts=("Grek", "Runr")``) are applied on top of it.
        progress: show tqdm progress bars (on stderr).
        save: write the cache file (tests may skip it).

    Returns:
        A :class:`GlyphArchive` whose ``path`` is the cache file.

    Raises:
        ValueError: no usable fonts or characters, a bad setting, or an unreadable cache file.
    """
    cfg = config or GlyphConfig()
    if config_overrides:
        cfg = GlyphConfig(**{**asdict(cfg), **config_overrides})
    files = font_files(fonts)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / f"glyphs-v{FORMAT_VERSION}-seed{seed}-{_cache_key(cfg, seed, files)}.npz"
    if path.exists() and not rebuild:
        return _read_archive(path, cfg, seed)  # GlyphCacheError (a ValueError) naming the file and the fix
    font_specs = find_fonts(files)
    images, codepoints, scripts, script_names, faces = _generate(font_specs, cfg, seed, progress)
    meta = {
        "version": FORMAT_VERSION,
        "seed": int(seed),
        "config": asdict(cfg),
        "fonts": [f.name for f in font_specs],
    }
    archive = GlyphArchive(
        images=images,
        codepoints=codepoints,
        scripts=scripts,
        script_names=script_names,
        faces=faces,
        fonts=[f.name for f in font_specs],
        config=cfg,
        seed=seed,
        path=path if save else None,
    )
    if save:
        _write_npz(
            path,
            {
                "images": images,
                "codepoints": codepoints.astype(np.int32),
                "scripts": np.array(scripts, dtype="<U4"),
                "script_names": np.array(script_names),
                "faces": faces,
                "meta": np.array(json.dumps(meta, sort_keys=True)),
            },
        )
    return archive


# ---------------------------------------------------------------------------------------- split
def split_scripts(
    script_sizes: dict[str, int], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> dict[str, list[str]]:
    """Assign whole scripts (alphabets) to ``"train"``, ``"val"`` and ``"test"``.

    Scripts are shuffled with ``default_rng([seed, 1])``; the test split takes scripts until it
    holds at least ``fractions[2]`` of the characters, then validation takes ``fractions[1]``,
    and training keeps the rest (always at least one script). A split with fraction > 0 gets at
    least one script while more than one remains.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, script names sorted within each split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    names = sorted(script_sizes)
    rng = np.random.default_rng([seed, 1])
    remaining = [names[i] for i in rng.permutation(len(names))]
    total = sum(script_sizes.values())
    out: dict[str, list[str]] = {}
    for split, frac in (("test", fractions[2]), ("val", fractions[1])):
        got, taken = 0, []
        while frac > 0 and len(remaining) > 1 and got < frac * total:
            s = remaining.pop(0)
            taken.append(s)
            got += script_sizes[s]
        out[split] = sorted(taken)
    out["train"] = sorted(remaining)
    return {k: out[k] for k in ("train", "val", "test")}


def load_glyphs(
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    rebuild: bool = False,
    fonts: str | Sequence[str | os.PathLike[str]] = "auto",
    augment_rotations: bool = False,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    progress: bool = False,
    dtype: Literal["float32", "uint8"] = "float32",
    **config_overrides: Any,
) -> dict[str, ImageClassDataset]:
    """The glyph set split by script into meta-train, validation and meta-test.

    Args:
        seed: generation and split seed (see :func:`build_glyphs`, :func:`split_scripts`).
        cache_dir, rebuild, fonts, progress: see :func:`build_glyphs`.
        augment_rotations: add 90/180/270-degree rotations of each training character as new
            classes (the Omniglot protocol of MAML/Reptile; training split only).
        fractions: share of characters for (train, val, test).
        dtype: ``"float32"`` (values in [0, 1]) or ``"uint8"`` (0..255, a quarter of the memory;
            the episode sampler converts to float in [0, 1]).
        **config_overrides: :class:`GlyphConfig` fields, e.g. ``max_chars_per_script=10``.

    Returns:
        ``{"train", "val", "test"}`` -> :class:`ImageClassDataset` of ``[20, 28, 28]`` float32
        classes (ink 0, background 1), class names ``"<Script>/U+XXXX"``, groups = script names.
    """
    archive = build_glyphs(seed, cache_dir, rebuild, fonts, progress=progress, **config_overrides)
    return split_archive(archive, seed, fractions, augment_rotations, dtype)


def split_archive(
    archive: GlyphArchive,
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    augment_rotations: bool = False,
    dtype: Literal["float32", "uint8"] = "float32",
) -> dict[str, ImageClassDataset]:
    """Split a :class:`GlyphArchive` by script (see :func:`load_glyphs`)."""
    sizes: dict[str, int] = {}
    for s in archive.script_names:
        sizes[s] = sizes.get(s, 0) + 1
    assignment = split_scripts(sizes, seed, fractions)
    full = archive.to_dataset(dtype)
    out: dict[str, ImageClassDataset] = {}
    for split, scripts in assignment.items():
        wanted = set(scripts)
        ds = full.subset([i for i, g in enumerate(full.groups) if g in wanted])
        if split == "train" and augment_rotations:
            ds = rotate_classes(ds)
        out[split] = ds
    return out


def glyph_stats(
    splits: dict[str, ImageClassDataset] | None = None,
    archive: GlyphArchive | None = None,
    **load_kwargs: Any,
) -> dict[str, Any]:
    """Counts of the glyph set: scripts, characters and images overall and per split.

    Pass the result of :func:`load_glyphs` (and/or the :class:`GlyphArchive`), or the arguments
    of :func:`load_glyphs` to load it.

    Returns:
        ``{"scripts", "characters", "images", "splits": {name: {"scripts", "classes",
        "images"}}}`` plus, when the archive is known, ``"fonts"``, ``"faces_per_char"`` (mean
        number of distinct faces among a character's instances), ``"cache_path"`` and
        ``"cache_bytes"``.
    """
    if splits is None:
        if archive is None:
            seed = load_kwargs.pop("seed", 0)
            archive = build_glyphs(seed, **{k: v for k, v in load_kwargs.items() if k != "augment_rotations"})
            splits = split_archive(archive, seed, augment_rotations=load_kwargs.get("augment_rotations", False))
        else:
            splits = split_archive(archive, archive.seed)
    stats: dict[str, Any] = {"splits": {}}
    scripts: set[str] = set()
    chars = images = 0
    for name, ds in splits.items():
        groups = set(ds.groups)
        scripts |= groups
        base = sum(1 for c in ds.class_names if "/rot" not in c)
        chars += base
        images += sum(len(ds.images[i]) for i, c in enumerate(ds.class_names) if "/rot" not in c)
        stats["splits"][name] = {"scripts": len(groups), "classes": ds.n_classes, "images": len(ds)}
    stats.update({"scripts": len(scripts), "characters": chars, "images": images})
    if archive is not None:
        stats["fonts"] = len(set(archive.faces.ravel().tolist()))
        stats["faces_per_char"] = float(np.mean([len(set(r.tolist())) for r in archive.faces]))
        if archive.path is not None and archive.path.exists():
            stats["cache_path"] = str(archive.path)
            stats["cache_bytes"] = archive.path.stat().st_size
    return stats
