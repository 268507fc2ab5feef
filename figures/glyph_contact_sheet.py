"""Contact sheet of sample 5-way 5-shot tasks from the font-rendered glyph set's meta-test split.

Each panel is one task as ``reptile.data.episodes.sample_episode`` draws it: one row per class
(a character of a script never seen in meta-training), its 5 training instances, then a held-out
test instance. The CSV lists the characters shown (task, label, class name, script).

Full mode uses the whole glyph set (generated once and cached, see docs/data.md); fast mode
renders a few scripts from the fonts that ship with matplotlib, without touching the cache.

Run: ``python -m figures.glyph_contact_sheet [--fast] [--out DIR]``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from figures import style
from figures.common import cli, note
from reptile.data.episodes import contact_sheet
from reptile.data.glyphs import build_glyphs, glyph_stats, split_archive

NAME = "glyph_contact_sheet"
SETTINGS = {
    "full": dict(build={}, tasks=4, ways=5, shots=5),
    "fast": dict(
        build=dict(fonts="matplotlib", scripts=("Greek", "Armenian", "Hebrew", "Georgian", "Cyrillic"),
                   max_chars_per_script=12, min_chars_per_script=8, save=False),
        tasks=2, ways=5, shots=3,
    ),
}


def main(fast: bool = False, out: str | Path | None = None, seed: int = 0) -> list[Path]:
    cfg = SETTINGS["fast" if fast else "full"]
    archive = build_glyphs(seed, **cfg["build"])
    splits = split_archive(archive, seed)
    test = splits["test"]
    stats = glyph_stats(splits, archive=archive)
    fig, rows = contact_sheet(
        test, np.random.default_rng(seed), n_tasks=cfg["tasks"], n_way=cfg["ways"], train_shots=cfg["shots"],
        title=(f"Glyph set, meta-test split: {test.n_classes} characters of {len(test.group_names)} scripts "
               f"unseen in meta-training ({stats['characters']} characters, {stats['scripts']} scripts in all)"),
    )
    return style.save(fig, pd.DataFrame(rows), NAME, out, note=note(fast))


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
