"""Reader for Mini-ImageNet (Vinyals et al., 2016; split of Ravi & Larochelle, 2017).

Mini-ImageNet has 100 ImageNet classes of 600 images, split 64/16/20 into meta-train,
validation and meta-test, used at 84x84 RGB. The layout of the official Reptile code is
``miniimagenet/{train,val,test}/<wnid>/*.JPEG`` (the data cannot be downloaded by this toolkit);
``data_dir`` may be the ``miniimagenet/`` folder itself or its parent.

Memory: the full set is 60,000 images; as float32 that is 5 GB, so images are kept as uint8
(1.27 GB) by default and converted to float32 in [0, 1] when episodes or tensors are made.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from reptile.data.images import IMAGE_SUFFIXES, ImageClassDataset, load_image

__all__ = ["load_miniimagenet", "MINIIMAGENET_LAYOUT", "SPLITS"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SIZE = 84
MINIIMAGENET_LAYOUT = (
    "expected the Mini-ImageNet layout <data_dir>/miniimagenet/{train,val,test}/<wnid>/*.JPEG "
    "(data_dir may also be the miniimagenet/ folder itself)"
)


def _root(data_dir: Path) -> Path:
    if not data_dir.exists():
        raise FileNotFoundError(f"Mini-ImageNet folder not found: {data_dir}; {MINIIMAGENET_LAYOUT}")
    if not data_dir.is_dir():
        raise ValueError(f"Mini-ImageNet data_dir is not a folder: {data_dir}; {MINIIMAGENET_LAYOUT}")
    if (data_dir / "miniimagenet").is_dir() and not (data_dir / "train").is_dir():
        return data_dir / "miniimagenet"
    return data_dir


def load_miniimagenet(
    data_dir: str | os.PathLike[str],
    image_size: int = IMAGE_SIZE,
    dtype: Literal["uint8", "float32"] = "uint8",
    max_per_class: int | None = None,
    progress: bool = False,
) -> dict[str, ImageClassDataset]:
    """Read the three Mini-ImageNet splits.

    Args:
        data_dir: the ``miniimagenet/`` folder or its parent.
        image_size: side of the square RGB images (paper: 84).
        dtype: ``"uint8"`` (default, 4x less memory; the episode sampler divides by 255) or
            ``"float32"`` in [0, 1].
        max_per_class: read only the first images of each class (sorted by file name), e.g. for
            a quick smoke test; ``None`` reads all 600.
        progress: show a tqdm progress bar.

    Returns:
        ``{"train", "val", "test"}`` -> :class:`ImageClassDataset` of ``[n, 84, 84, 3]`` classes;
        class names and groups are the wnids (e.g. ``"n01532829"``).

    Raises:
        FileNotFoundError: ``data_dir`` or one of the split folders is missing (the message names
            it and the layout expected).
        ValueError: a split without class folders, or a class folder without images.
        ImageLoadError: an unreadable image (the message names the file).
    """
    root = _root(Path(data_dir).expanduser())
    listing: dict[str, list[tuple[str, list[Path]]]] = {}
    for split in SPLITS:
        d = root / split
        if not d.is_dir():
            raise FileNotFoundError(f"Mini-ImageNet split folder not found: {d}; {MINIIMAGENET_LAYOUT}")
        classes = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ValueError(f"no class (<wnid>) folders in {d}; {MINIIMAGENET_LAYOUT}")
        entries = []
        for c in classes:
            files = sorted(f for f in c.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"class folder {c} has no image files (*.JPEG)")
            entries.append((c.name, files[:max_per_class] if max_per_class else files))
        listing[split] = entries
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(f) for e in listing.values() for _, f in e), desc="miniimagenet", unit="img")
    out: dict[str, ImageClassDataset] = {}
    try:
        for split, entries in listing.items():
            images = []
            for _, files in entries:
                arrs = []
                for f in files:
                    arrs.append(load_image(f, mode="RGB", size=image_size, dtype=dtype))
                    if bar is not None:
                        bar.update(1)
                images.append(np.stack(arrs))
            wnids = [w for w, _ in entries]
            out[split] = ImageClassDataset(images=images, class_names=wnids, groups=list(wnids))
    finally:
        if bar is not None:
            bar.close()
    return out
