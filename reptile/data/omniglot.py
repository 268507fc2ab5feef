"""Reader for Omniglot (Lake et al., 2015) as used by MAML and Reptile.

Omniglot has 1623 handwritten characters from 50 alphabets, each drawn by 20 people, as 105x105
binary PNGs (black ink on white). The Reptile paper (following Santoro et al. 2016 and MAML)
resizes them to 28x28, pools all characters, takes 1200 at random for meta-training and tests
on the remaining 423, and augments the meta-training characters with rotations by 90, 180 and
270 degrees, each rotation a new class (4800 training classes).

Two on-disk layouts are accepted (the data cannot be downloaded by this toolkit):

* the official Reptile code's ``omniglot/<Alphabet>/character<NN>/*.png`` (its fetch script
  merges both halves of the release into one folder), and
* the original release's ``images_background/<Alphabet>/character<NN>/*.png`` plus
  ``images_evaluation/<Alphabet>/character<NN>/*.png`` (unzipped).

``data_dir`` may be that folder itself or its parent.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from reptile.data.images import IMAGE_SUFFIXES, ImageClassDataset, load_image, rotate_classes

__all__ = ["load_omniglot", "find_omniglot_characters", "OMNIGLOT_LAYOUTS", "N_TRAIN_CHARACTERS"]

#: Characters used for meta-training in the paper (the rest are the meta-test set).
N_TRAIN_CHARACTERS = 1200
IMAGE_SIZE = 28
_RELEASE_PARTS = ("images_background", "images_evaluation")

OMNIGLOT_LAYOUTS = (
    "expected one of these Omniglot layouts:\n"
    "  <data_dir>/omniglot/<Alphabet>/character<NN>/*.png   (official Reptile code), or\n"
    "  <data_dir>/images_background/<Alphabet>/character<NN>/*.png and\n"
    "  <data_dir>/images_evaluation/<Alphabet>/character<NN>/*.png   (original release, unzipped);\n"
    "data_dir may also be the omniglot/ folder itself"
)


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _alphabet_roots(data_dir: Path) -> list[Path]:
    """The folder(s) whose subfolders are alphabets."""
    if not data_dir.exists():
        raise FileNotFoundError(f"Omniglot folder not found: {data_dir}; {OMNIGLOT_LAYOUTS}")
    if not data_dir.is_dir():
        raise ValueError(f"Omniglot data_dir is not a folder: {data_dir}; {OMNIGLOT_LAYOUTS}")
    for base in (data_dir, data_dir / "omniglot"):
        parts = [base / p for p in _RELEASE_PARTS if (base / p).is_dir()]
        if parts:
            return parts
    zips = [data_dir / f"{p}.zip" for p in _RELEASE_PARTS if (data_dir / f"{p}.zip").exists()]
    if zips:
        raise ValueError(
            f"found {', '.join(str(z) for z in zips)} but not the unzipped folders; unzip them in "
            f"{data_dir} first; {OMNIGLOT_LAYOUTS}"
        )
    if (data_dir / "omniglot").is_dir():
        return [data_dir / "omniglot"]
    return [data_dir]


def find_omniglot_characters(data_dir: str | os.PathLike[str]) -> list[tuple[str, str, list[Path]]]:
    """List Omniglot's characters without reading any image.

    Returns:
        ``[(alphabet, character, [image paths sorted by name])]`` sorted by alphabet then
        character (hidden files and folders, and folders not named ``character*``, are ignored).

    Raises:
        FileNotFoundError: ``data_dir`` does not exist.
        ValueError: the folder does not have an Omniglot layout: no alphabet folders, an alphabet
            without ``character*`` folders, a character folder without images, an alphabet in
            both release halves, or only the release's zip files. The message names the
            offending path and the layouts expected.
    """
    root = Path(data_dir).expanduser()
    roots = _alphabet_roots(root)
    seen: dict[str, Path] = {}
    out: list[tuple[str, str, list[Path]]] = []
    for r in roots:
        alphabets = _visible_dirs(r)
        if not alphabets:
            raise ValueError(f"no alphabet folders in {r}; {OMNIGLOT_LAYOUTS}")
        for alpha in alphabets:
            name = alpha.name
            if name in seen:
                raise ValueError(f"alphabet {name!r} appears twice: in {seen[name]} and {alpha}")
            seen[name] = alpha
            chars = [c for c in _visible_dirs(alpha) if c.name.lower().startswith("character")]
            if not chars:
                raise ValueError(
                    f"alphabet folder {alpha} has no character<NN> subfolders; {OMNIGLOT_LAYOUTS}"
                )
            for ch in chars:
                files = sorted(
                    f for f in ch.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                )
                if not files:
                    raise ValueError(f"character folder {ch} has no image files (*.png)")
                out.append((name, ch.name, files))
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def load_omniglot(
    data_dir: str | os.PathLike[str],
    seed: int = 0,
    n_train: int = N_TRAIN_CHARACTERS,
    n_val: int = 0,
    augment_rotations: bool = True,
    image_size: int = IMAGE_SIZE,
    resample: Literal["nearest", "lanczos", "box", "bilinear"] = "nearest",
    progress: bool = False,
) -> dict[str, ImageClassDataset]:
    """Read Omniglot and split it as the Reptile paper does.

    Args:
        data_dir: the Omniglot folder or its parent (see the module docstring for layouts).
        seed: seeds ``numpy.random.default_rng(seed)``, which permutes the characters (sorted by
            alphabet and character name) before the split; no global RNG is used.
        n_train: characters for meta-training (paper: 1200 of 1623; the remaining characters are
            the meta-test set).
        n_val: characters moved from the end of the meta-training share into a validation
            split (0: an empty validation split), so the test split stays the paper's.
        augment_rotations: add rotations by 90/180/270 degrees of each meta-training character
            as new classes (paper and official code; meta-training only).
        image_size: side of the square images (paper: 28; the files are 105x105).
        resample: Pillow filter for the resize. ``"nearest"`` (default) is what the official code
            gets (Pillow's default for Omniglot's binary PNGs), so pixels stay exactly 0 or 1;
            ``"lanczos"``/``"box"`` give antialiased grey strokes.
        progress: show a tqdm progress bar while reading the images.

    Returns:
        ``{"train", "val", "test"}`` -> :class:`ImageClassDataset` of float32 ``[n, 28, 28]``
        classes in [0, 1], ink 0 on background 1 (as in the official code); class names
        ``"<Alphabet>/character<NN>"`` (``+ "/rot90"`` etc.), groups = alphabets.

    Raises:
        FileNotFoundError, ValueError: a missing or malformed folder (the message names it and
            the layouts expected), or ``n_train``/``n_val`` that do not fit the characters found.
        ImageLoadError: an unreadable image (the message names the file).
    """
    chars = find_omniglot_characters(data_dir)
    if not 0 <= n_val < n_train < len(chars):
        raise ValueError(
            f"need 0 <= n_val < n_train < number of characters, got n_val={n_val}, n_train={n_train} "
            f"with {len(chars)} characters in {data_dir} (the full Omniglot has 1623)"
        )
    filters = {
        "nearest": Image.Resampling.NEAREST,
        "lanczos": Image.Resampling.LANCZOS,
        "box": Image.Resampling.BOX,
        "bilinear": Image.Resampling.BILINEAR,
    }
    if resample not in filters:
        raise ValueError(f"resample must be one of {', '.join(filters)}, got {resample!r}")
    filt = filters[resample]
    items: Iterable[int] = range(len(chars))
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="omniglot", unit="char")
    images = [
        np.stack([load_image(f, mode="L", size=image_size, resample=filt) for f in chars[i][2]]) for i in items
    ]
    full = ImageClassDataset(
        images=images,
        class_names=[f"{a}/{c}" for a, c, _ in chars],
        groups=[a for a, _, _ in chars],
    )
    perm = np.random.default_rng(seed).permutation(len(chars))
    train = full.subset(perm[: n_train - n_val])
    val = full.subset(perm[n_train - n_val : n_train])
    test = full.subset(perm[n_train:])
    if augment_rotations:
        train = rotate_classes(train)
    return {"train": train, "val": val, "test": test}
