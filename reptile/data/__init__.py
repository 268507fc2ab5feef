"""Few-shot image data: datasets, readers, the generated glyph set and episode sampling.

* :class:`ImageClassDataset` -- images grouped by class (one ``[n_i, H, W(, 3)]`` array each).
* :func:`load_dataset` -- ``"glyphs"`` (generated from fonts, always available), ``"omniglot"``
  and ``"miniimagenet"`` (read from folders the user provides) -> ``{"train", "val", "test"}``.
* :func:`sample_episode` -- one N-way K-shot task as tensors.
"""
from __future__ import annotations

import os
from typing import Any

from reptile.data.episodes import Episode, contact_sheet, sample_episode
from reptile.data.glyphs import build_glyphs, glyph_stats, load_glyphs
from reptile.data.images import ImageClassDataset, ImageLoadError, images_to_tensor, load_image, rotate_classes
from reptile.data.miniimagenet import load_miniimagenet
from reptile.data.omniglot import load_omniglot

__all__ = [
    "DATASETS",
    "Episode",
    "ImageClassDataset",
    "ImageLoadError",
    "build_glyphs",
    "contact_sheet",
    "glyph_stats",
    "images_to_tensor",
    "load_dataset",
    "load_glyphs",
    "load_image",
    "load_miniimagenet",
    "load_omniglot",
    "rotate_classes",
    "sample_episode",
]

#: Names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = ("glyphs", "omniglot", "miniimagenet")


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, seed: int = 0, **kwargs: Any
) -> dict[str, ImageClassDataset]:
    """Load a few-shot dataset split into ``"train"``, ``"val"`` and ``"test"``.

    Args:
        name: ``"glyphs"`` (:func:`reptile.data.glyphs.load_glyphs`; ``data_dir`` is its cache
            directory), ``"omniglot"`` (:func:`reptile.data.omniglot.load_omniglot`) or
            ``"miniimagenet"`` (:func:`reptile.data.miniimagenet.load_miniimagenet`; ``seed`` is
            unused because its split is fixed by the folders).
        data_dir: the folder holding the data (required for Omniglot and Mini-ImageNet, which
            cannot be downloaded by this toolkit).
        seed: seeds the split (glyphs, Omniglot) and the glyph generation.
        **kwargs: passed to the loader (e.g. ``augment_rotations=False``).

    Raises:
        ValueError: an unknown name (the message lists :data:`DATASETS`) or a missing ``data_dir``.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key == "glyphs":
        return load_glyphs(seed=seed, cache_dir=data_dir, **kwargs)
    if key in ("omniglot", "miniimagenet"):
        if data_dir is None:
            raise ValueError(
                f"dataset {name!r} is read from a folder you provide: pass data_dir "
                f"(see docs/data.md for the expected layout)"
            )
        if key == "omniglot":
            return load_omniglot(data_dir, seed=seed, **kwargs)
        return load_miniimagenet(data_dir, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
