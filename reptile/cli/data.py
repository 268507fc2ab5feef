"""``reptile glyphs build`` and ``reptile glyphs sheet``: the font-rendered Omniglot stand-in.

``build`` generates (or finds in the cache) the glyph set and prints its counts per split;
``sheet`` writes a contact-sheet PNG of sample N-way tasks drawn from one split.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from reptile.paths import check_output_file

from ..threads import apply_threads
from .argtypes import add_threads_flag, int_at_least, nonneg_int, positive_int


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=nonneg_int, default=0, help="generation and split seed (default 0)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="cache folder (default $REPTILE_CACHE or ~/.cache/reptile-lab)")
    p.add_argument("--fonts", default="auto",
                   help="auto (Noto if installed, plus matplotlib's DejaVu/STIX; default), noto, matplotlib, "
                        "or a comma-separated list of font files/folders")
    p.add_argument("--scripts", default=None,
                   help="comma-separated scripts to keep (ISO 15924 codes or names, e.g. Grek,Armenian)")
    p.add_argument("--max-scripts", type=positive_int, default=None, help="keep only this many scripts")
    p.add_argument("--max-chars", type=positive_int, default=None,
                   help="characters per script at most (default 55, Omniglot's largest alphabet)")
    p.add_argument("--min-chars", type=positive_int, default=None,
                   help="drop scripts with fewer characters (default 14, Omniglot's smallest alphabet)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    add_threads_flag(p)


def _build_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    fonts: Any = args.fonts
    if fonts not in ("auto", "noto", "matplotlib"):
        fonts = [f for f in fonts.split(",") if f]
    kw: dict[str, Any] = {"seed": args.seed, "cache_dir": args.cache_dir, "fonts": fonts}
    if args.scripts:
        kw["scripts"] = tuple(s.strip() for s in args.scripts.split(",") if s.strip())
    if args.max_scripts is not None:
        kw["max_scripts"] = args.max_scripts
    if args.max_chars is not None:
        kw["max_chars_per_script"] = args.max_chars
    if args.min_chars is not None:
        kw["min_chars_per_script"] = args.min_chars
    if args.max_chars is not None and args.min_chars is None:
        kw["min_chars_per_script"] = min(14, args.max_chars)
    return kw


def _cmd_build(args: argparse.Namespace) -> int:
    from reptile.data.glyphs import build_glyphs, glyph_stats, split_archive

    apply_threads(args.threads)
    kw = _build_kwargs(args)
    seed = kw.pop("seed")
    tic = time.perf_counter()
    archive = build_glyphs(seed, rebuild=args.rebuild, progress=not args.no_progress, **kw)
    seconds = time.perf_counter() - tic
    splits = split_archive(archive, seed)
    stats = glyph_stats(splits, archive=archive)
    print(f"glyphs (seed {seed}): {stats['characters']} characters from {stats['scripts']} scripts, "
          f"{stats['images']} images of 28x28, rendered with {stats['fonts']} font files "
          f"({stats['faces_per_char']:.1f} faces per character on average)")
    for name, s in stats["splits"].items():
        print(f"  {name:5s}: {s['scripts']:4d} scripts {s['classes']:6d} characters {s['images']:8d} images")
    print(f"  scripts: {', '.join(archive.script_list)}")
    size = stats.get("cache_bytes", 0) / 1e6
    if args.fonts == "auto" and not any(name.startswith("Noto") for name in archive.fonts):
        print("note: no Noto fonts found, so only matplotlib's DejaVu/STIX were used; "
              "apt-get install fonts-noto-core gives about ten times more characters and scripts")
    print(f"{'loaded from cache' if archive.from_cache else 'generated'} in {seconds:.1f} s; cache {stats.get('cache_path')} ({size:.1f} MB)")
    return 0


def _cmd_sheet(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    from reptile.data.episodes import contact_sheet
    from reptile.data.glyphs import build_glyphs, split_archive

    check_output_file(args.out)
    apply_threads(args.threads)
    kw = _build_kwargs(args)
    seed = kw.pop("seed")
    archive = build_glyphs(seed, progress=not args.no_progress, **kw)
    ds = split_archive(archive, seed)[args.split]
    fig, _ = contact_sheet(
        ds, np.random.default_rng(args.task_seed), n_tasks=args.tasks, n_way=args.ways, train_shots=args.shots,
        title=f"glyphs, {args.split} split (seed {seed}): {ds.n_classes} characters of {len(ds.group_names)} scripts",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {args.out}", file=sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``reptile glyphs {build,sheet}`` to the ``reptile`` command's subparsers."""
    p = sub.add_parser(
        "glyphs",
        help="the Omniglot-shaped dataset rendered from fonts",
        description="Characters of real writing systems rendered from fonts, 20 distorted instances "
                    "each, split by script (see docs/data.md).",
    )
    gsub = p.add_subparsers(dest="glyphs_command", metavar="ACTION", required=True)
    b = gsub.add_parser("build", help="generate the glyph set (or load it from the cache) and print counts",
                        description="Render the glyph set from the installed fonts (slow the first time, with "
                                    "progress bars; later runs read the cache file) and print its characters, scripts "
                                    "and images per split (train/val/test, split by script).")
    _add_common(b)
    b.add_argument("--rebuild", action="store_true", help="regenerate even if the cache file exists")
    b.set_defaults(func=_cmd_build)
    s = gsub.add_parser("sheet", help="write a contact sheet PNG of sample N-way tasks",
                        description="Draw sample N-way K-shot tasks from one split of the glyph set (built or "
                                    "read from the cache as by `reptile glyphs build`) and write them as one "
                                    "PNG: one panel per task, one row per class (its training shots, then its held-out "
                                    "examples), labelled with the character's script and code point.")
    _add_common(s)
    s.add_argument("--out", type=Path, required=True, help="PNG file to write")
    s.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="split the tasks come from (default test: scripts never seen in training)")
    s.add_argument("--tasks", type=positive_int, default=4, help="tasks to show (default 4)")
    s.add_argument("--ways", type=positive_int, default=5, help="classes per task (default 5)")
    s.add_argument("--shots", type=positive_int, default=5, help="training shots per class (default 5)")
    s.add_argument("--task-seed", type=nonneg_int, default=0, help="seed of the tasks shown (default 0)")
    s.add_argument("--dpi", type=int_at_least(20), default=200, help="resolution (default 200)")
    s.set_defaults(func=_cmd_sheet)
