"""One matplotlib style for every figure of the project: paper-like, Agg backend, no display.

Import this module before ``matplotlib.pyplot`` (it selects the Agg backend), then use
:func:`figure` for a new figure, :data:`COLORS` / :func:`color` for the colour of an algorithm,
:func:`label` for a legend entry naming the algorithm and k, and :func:`save` to write PNG, PDF
and the CSV of the plotted numbers in one call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

#: where full-mode figures go unless ``--out`` says otherwise (the committed gallery of the README)
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
#: where fast-mode figures go unless ``--out`` says otherwise: a git-ignored scratch folder, so that a
#: smoke test never overwrites the committed full-mode results in :data:`DEFAULT_OUT`
FAST_OUT = DEFAULT_OUT / "fast"

#: the grey stamp of a fast-mode figure (``figures.common.note`` puts it first in a note)
FAST_NOTE = "fast mode (tiny settings): a smoke test, not the experiment"


def default_out(fast: bool) -> Path:
    """The output folder when none is given: :data:`FAST_OUT` in fast mode, else :data:`DEFAULT_OUT`."""
    return FAST_OUT if fast else DEFAULT_OUT

#: width of one column and of a full page of a two-column paper, in inches
COLUMN, PAGE = 3.4, 7.0

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.7,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "axes.prop_cycle": matplotlib.cycler(color=["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                                "#56B4E9", "#F0E442", "#000000"]),
}

#: one colour per algorithm, the same in every figure (colour-blind safe, Okabe-Ito)
COLORS = {
    "maml": "#D55E00",
    "fomaml": "#0072B2",
    "fomaml_shared": "#0072B2",
    "fomaml_separate": "#56B4E9",
    "reptile": "#009E73",
    "joint": "#7F7F7F",
    "true": "#000000",
    "before": "#999999",
}

NAMES = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile", "joint": "Joint training",
         "fomaml_shared": "FOMAML, shared tail", "fomaml_separate": "FOMAML, separate tail"}


def apply() -> None:
    """Install the style globally (idempotent)."""
    plt.rcParams.update(RC)


apply()


def color(name: str) -> str:
    """The colour of an algorithm (``"maml"``, ``"fomaml"``, ``"reptile"``, ``"joint"``, ...)."""
    return COLORS.get(name.lower(), "#333333")


def label(name: str, k: int | None = None, **extra: Any) -> str:
    """Legend entry: ``"Reptile (k=5)"``; ``extra`` adds ``, key=value`` pairs."""
    text = NAMES.get(name.lower(), name)
    parts = ([f"k={k}"] if k is not None else []) + [f"{key}={v}" for key, v in extra.items()]
    return f"{text} ({', '.join(parts)})" if parts else text


def figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None,
           **kwargs: Any) -> tuple[plt.Figure, Any]:
    """A new figure of paper size: one column wide for one panel, a page wide for several."""
    width = width if width is not None else (COLUMN if ncols == 1 else PAGE)
    height = height if height is not None else 2.4 * nrows
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kwargs)


def save(fig: plt.Figure, data: pd.DataFrame, name: str, out: str | Path | None = None,
         note: str | None = None) -> list[Path]:
    """Write ``<out>/<name>.png``, ``.pdf`` and ``.csv`` (the plotted numbers); close the figure.

    ``note`` (e.g. "fast mode: tiny settings, not the experiment") is stamped in small grey type
    at the bottom so that a fast-mode figure is never mistaken for a result. With ``out=None`` a
    figure stamped with :data:`FAST_NOTE` goes to :data:`FAST_OUT`, any other to :data:`DEFAULT_OUT`.
    """
    out = Path(out) if out is not None else default_out(fast=bool(note and FAST_NOTE in note))
    out.mkdir(parents=True, exist_ok=True)
    if note:
        fig.text(0.995, -0.025, note, ha="right", va="top", fontsize=6, color="#888888", wrap=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    fig.savefig(paths[0])
    fig.savefig(paths[1])
    plt.close(fig)
    data.to_csv(paths[2], index=False)
    return paths


def log_slope_guide(ax: Any, x: Iterable[float], y0: float, slope: float, text: str | None = None,
                    **kwargs: Any) -> None:
    """Draw ``y = y0 * (x / x[0]) ** slope`` as a dashed guide line on a log-log axis."""
    xs = list(x)
    ys = [y0 * (v / xs[0]) ** slope for v in xs]
    kwargs.setdefault("color", "#555555")
    kwargs.setdefault("linestyle", "--")
    kwargs.setdefault("linewidth", 0.8)
    ax.plot(xs, ys, **kwargs)
    if text:
        ax.annotate(text, (xs[-1], ys[-1]), fontsize=7, color=kwargs["color"], xytext=(2, 0),
                    textcoords="offset points", va="center")
