"""Image classification datasets for few-shot learning, and image-file loading.

An :class:`ImageClassDataset` is what every reader in :mod:`reptile.data` returns and what
:func:`reptile.data.episodes.sample_episode` draws N-way K-shot tasks from: one array of images
per class. It is deliberately plain (lists of numpy arrays) so that any source (Omniglot,
Mini-ImageNet, the generated glyph set, a user's folder) fits it.

Conventions (shared with the official Reptile code, github.com/openai/supervised-reptile):

* grayscale images are ``[n_i, H, W]`` and colour images ``[n_i, H, W, 3]`` (channels last, as
  stored on disk); :meth:`ImageClassDataset.to_tensors` and the episode sampler return
  channels-first ``[n, C, H, W]`` tensors as PyTorch convolutions expect;
* values are float32 in [0, 1]; grayscale character images have ink 0.0 on background 1.0,
  as ``np.array(Image.open(omniglot_png))`` gives in the official code. Large colour datasets may
  be stored as uint8 (value / 255) to save memory; they are converted to float32 in [0, 1]
  whenever tensors are made.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

#: the most pixels a dataset image may have (Pillow's own decompression-bomb threshold, about 89 million:
#: dataset images are far smaller; Mini-ImageNet's originals are about 0.2 million)
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

__all__ = [
    "ImageClassDataset",
    "ImageLoadError",
    "load_image",
    "images_to_tensor",
    "rotate_classes",
    "IMAGE_SUFFIXES",
]

#: File name endings accepted as images by the folder readers (compared case-insensitively).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageLoadError(ValueError):
    """An image file could not be read (missing, not an image, corrupt or truncated).

    The message always names the file. Subclasses ``ValueError`` so callers that validate data
    with ``except ValueError`` catch it too.
    """


@dataclass(frozen=True, eq=False)
class ImageClassDataset:
    """Images grouped by class: the unit few-shot tasks are sampled from.

    Attributes:
        images: one array per class, ``[n_i, H, W]`` (grayscale) or ``[n_i, H, W, 3]`` (RGB),
            float32 in [0, 1] (or uint8 meaning value / 255). All classes share ``H, W`` and the
            channel layout; ``n_i`` may differ between classes.
        class_names: one name per class, e.g. ``"Greek/character07"``, ``"n01532829"`` or
            ``"Armenian/U+0562/rot90"``.
        groups: the group of each class: the alphabet (Omniglot), the Unicode script (glyphs) or
            the wnid (Mini-ImageNet). Splits by group keep whole alphabets apart.
        image_shape: ``(H, W)`` or ``(H, W, 3)``; inferred from the first class, required only for
            an empty dataset (no classes).

    ``len(dataset)`` is the total number of images; ``dataset.n_classes`` the number of classes.
    Treat instances as immutable (the class sizes are cached when constructed).

    Raises:
        ValueError: mismatched lengths of ``images``/``class_names``/``groups``, a class with a
            different image shape, a wrong dtype or rank, or an empty dataset without
            ``image_shape``.
    """

    images: list[np.ndarray]
    class_names: list[str]
    groups: list[str]
    image_shape: tuple[int, ...] | None = None
    _sizes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (len(self.images) == len(self.class_names) == len(self.groups)):
            raise ValueError(
                f"ImageClassDataset needs one name and one group per class; got {len(self.images)} "
                f"image arrays, {len(self.class_names)} class_names and {len(self.groups)} groups"
            )
        shape = self.image_shape
        if shape is None:
            if not self.images:
                raise ValueError("an empty ImageClassDataset needs image_shape=(H, W) or (H, W, 3)")
            shape = tuple(int(s) for s in self.images[0].shape[1:])
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
            raise ValueError(f"image_shape must be (H, W) or (H, W, 3), got {shape}")
        for i, arr in enumerate(self.images):
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"class {self.class_names[i]!r}: images must be numpy arrays, got {type(arr).__name__}")
            if tuple(arr.shape[1:]) != shape:
                raise ValueError(
                    f"class {self.class_names[i]!r} has images of shape {tuple(arr.shape[1:])}, "
                    f"expected {shape} like the other classes"
                )
            if arr.dtype not in (np.float32, np.uint8):
                raise ValueError(
                    f"class {self.class_names[i]!r} has dtype {arr.dtype}; use float32 in [0, 1] or uint8"
                )
        object.__setattr__(self, "image_shape", shape)
        object.__setattr__(self, "_sizes", np.array([len(a) for a in self.images], dtype=np.int64))

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Total number of images over all classes."""
        return int(self._sizes.sum())

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.images)

    @property
    def class_sizes(self) -> np.ndarray:
        """int64 ``[n_classes]``: number of images of each class (a copy)."""
        return self._sizes.copy()

    @property
    def min_class_size(self) -> int:
        """Images in the smallest class (0 for an empty dataset)."""
        return int(self._sizes.min()) if len(self._sizes) else 0

    @property
    def channels(self) -> int:
        """1 for grayscale, 3 for RGB."""
        assert self.image_shape is not None
        return 1 if len(self.image_shape) == 2 else self.image_shape[2]

    @property
    def group_names(self) -> list[str]:
        """The distinct groups (alphabets, scripts, wnids) in order of first appearance."""
        return list(dict.fromkeys(self.groups))

    # ------------------------------------------------------------------ views
    def subset(self, classes: Sequence[int]) -> "ImageClassDataset":
        """The dataset restricted to the classes with the given indices (in that order)."""
        idx = [int(i) for i in classes]
        return ImageClassDataset(
            images=[self.images[i] for i in idx],
            class_names=[self.class_names[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            image_shape=self.image_shape,
        )

    def to_tensors(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one tensor with a channel dimension, and their class labels.

        Returns:
            ``(x, y)``: ``x`` of shape ``[len(self), C, H, W]`` in [0, 1] and ``y`` int64 of shape
            ``[len(self)]`` holding each image's class index, classes in order.
        """
        if self.n_classes == 0:
            x = np.zeros((0, *self.image_shape), dtype=np.float32)  # type: ignore[misc]
        else:
            x = np.concatenate(self.images, axis=0)
        y = torch.from_numpy(np.repeat(np.arange(self.n_classes, dtype=np.int64), self._sizes))
        return images_to_tensor(x, device=device, dtype=dtype), y.to(device)


def images_to_tensor(
    images: np.ndarray, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Convert an image batch to a channels-first tensor.

    Args:
        images: ``[n, H, W]`` (grayscale) or ``[n, H, W, C]``, float32 in [0, 1] or uint8.

    Returns:
        ``[n, 1, H, W]`` or ``[n, C, H, W]`` tensor of ``dtype`` on ``device``, values in [0, 1].
    """
    arr = np.ascontiguousarray(images)
    t = torch.from_numpy(arr)
    if arr.ndim == 3:
        t = t.unsqueeze(1)
    elif arr.ndim == 4:
        t = t.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"images must be [n, H, W] or [n, H, W, C], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return t.to(device=device, dtype=dtype).div_(255.0)
    return t.to(device=device, dtype=dtype)


def rotate_classes(dataset: ImageClassDataset, angles: Sequence[int] = (0, 90, 180, 270)) -> ImageClassDataset:
    """Augment a dataset with rotated copies of each class, each rotation a new class.

    This is the Omniglot augmentation of Santoro et al. (2016) used by MAML and Reptile for
    meta-training only: the 1200 training characters rotated by 0/90/180/270 degrees give 4800
    classes. Rotations are counter-clockwise ``np.rot90`` views (no copy); class ``c`` rotated by
    ``a`` degrees is named ``f"{c}/rot{a}"`` (``a = 0`` keeps the name) and keeps ``c``'s group.
    The order is class-major: ``[c0 rot0, c0 rot90, ..., c1 rot0, ...]``.

    Raises:
        ValueError: an angle that is not a multiple of 90, or non-square images.
    """
    for a in angles:
        if a % 90 != 0:
            raise ValueError(f"rotation angles must be multiples of 90 degrees, got {a}")
    shape = dataset.image_shape
    assert shape is not None
    if any(a % 180 for a in angles) and shape[0] != shape[1]:
        raise ValueError(f"90-degree rotations need square images, got {shape[:2]}")
    images, names, groups = [], [], []
    for arr, name, group in zip(dataset.images, dataset.class_names, dataset.groups):
        for a in angles:
            k = (a // 90) % 4
            images.append(np.rot90(arr, k=k, axes=(1, 2)) if k else arr)
            names.append(name if a == 0 else f"{name}/rot{a}")
            groups.append(group)
    return ImageClassDataset(images=images, class_names=names, groups=groups, image_shape=shape)


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """16-bit greyscale scaled to 8-bit ``"L"``; other high-bit-depth modes refused; rest unchanged."""
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageLoadError(f"cannot read image {path}: 32-bit integer pixel values from {a.min()} to "
                                 f"{a.max()} have no known range; save it as an 8- or 16-bit PNG")
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if img.mode == "F":
        raise ImageLoadError(f"cannot read image {path}: 32-bit floating-point pixels (mode F) have no known "
                             f"range; save it as an 8- or 16-bit PNG")
    return img


def load_image(
    path: str | os.PathLike[str],
    mode: Literal["L", "RGB"] = "L",
    size: int | tuple[int, int] | None = None,
    dtype: Literal["float32", "uint8"] = "float32",
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> np.ndarray:
    """Read one image file with Pillow, convert its mode and optionally resize it.

    Args:
        path: the image file.
        mode: ``"L"`` (grayscale, e.g. Omniglot: ink 0 on white 1 stays as drawn) or ``"RGB"``
            (e.g. Mini-ImageNet). Palette, binary (``"1"``) and alpha images are converted;
            transparent pixels are composited on white.
        size: ``s`` or ``(width, height)`` to resize to (Omniglot: 28, Mini-ImageNet: 84), or
            ``None`` to keep the file's size.
        dtype: ``"float32"`` for values in [0, 1], ``"uint8"`` for 0..255.
        resample: Pillow filter for the resize (antialiased Lanczos by default; the official code
            used Pillow's default filter, which for Omniglot's binary PNGs is nearest-neighbour).

    Returns:
        ``[H, W]`` for mode ``"L"`` or ``[H, W, 3]`` for ``"RGB"``.

    16-bit greyscale files (Pillow modes ``"I;16*"``, or ``"I"`` with values in 0..65535) are
    scaled to 8 bits (value / 257), not clipped; CMYK and other colour modes are converted by
    Pillow. 32-bit floating-point and 32-bit integer images beyond 16 bits have no known value
    range and are refused.

    Raises:
        ImageLoadError: (a ``ValueError``) naming the file when it is missing, not an image,
            corrupt or truncated, or of a mode with no known value range.
        ValueError: a ``mode``, ``size`` or ``dtype`` argument that is not one of those above.
    """
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' (greyscale) or 'RGB', got {mode!r}")
    if dtype not in ("float32", "uint8"):
        raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}")
    if size is not None:
        sizes = (size,) if isinstance(size, (int, np.integer)) else tuple(size) if isinstance(size, (tuple, list)) else ()
        if not sizes or len(sizes) > 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                                              for v in sizes):
            raise ValueError(f"size must be a positive whole number or (width, height), got {size!r}")
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img_file = Image.open(p)
        with img_file as img:
            w, h = img.size
            if w * h > MAX_PIXELS:  # checked from the header, before anything is decoded
                raise ImageLoadError(f"cannot read image {p}: it has {w} x {h} pixels, more than the {MAX_PIXELS:,} "
                                     f"an image of a dataset may have (a decompression bomb, or not a dataset "
                                     f"image); resize it or remove it from the folder")
            img.load()  # decode now: truncation and corruption surface here, not later
            img = ImageOps.exif_transpose(img)  # as a viewer shows it: EXIF orientation applied
            img = _to_8bit(img, p)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            out = img.convert(mode)
            if size is not None:
                wh = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
                if out.size != wh:
                    out = out.resize(wh, resample=resample)
            arr = np.asarray(out, dtype=np.uint8)
    except ImageLoadError:
        raise
    except FileNotFoundError as exc:
        raise ImageLoadError(f"image file not found: {p}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"cannot read image {p}: it is too large to decode safely ({exc}); resize it or "
                             f"remove it from the folder") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"cannot read image {p}: {type(exc).__name__}: {exc}") from exc
    if dtype == "uint8":
        return arr.copy()
    return arr.astype(np.float32) / np.float32(255.0)

