"""Few-shot datasets by name (built-in and registered) and the paper's CNN for a dataset."""
from __future__ import annotations

import contextvars
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Iterator

from torch import nn

from ..data import load_dataset
from ..data.images import ImageClassDataset
from ..models import MiniImageNetCNN, OmniglotCNN

Loader = Callable[..., dict[str, ImageClassDataset]]

#: extra datasets by name: ``loader(data_dir, seed, rotations) -> {"train", "val", "test"}``
DATASET_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str, loader: Loader) -> None:
    """Make ``--dataset NAME`` available: ``loader(data_dir, seed, rotations)`` returns the splits.

    Registered names take precedence over :data:`reptile.data.DATASETS` (glyphs, omniglot,
    miniimagenet); register before the command-line parser is built.
    """
    DATASET_LOADERS[name] = loader
    load_splits.cache_clear()


#: the datasets of :func:`reptile.data.load_dataset`
BUILTIN_DATASETS = ("glyphs", "omniglot", "miniimagenet")


def dataset_names() -> list[str]:
    return sorted(set(BUILTIN_DATASETS) | set(DATASET_LOADERS))


#: whether :func:`load_splits` shows progress on stderr (set with :func:`loading_progress`)
_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("reptile_fewshot_loading_progress", default=False)


@contextmanager
def loading_progress(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`load_splits` shows tqdm progress on stderr (a line naming the
    dataset while it loads, the loaders' own bars while they read or generate images). Commands
    wrap the building of a few-shot setup in it; library calls stay silent by default."""
    token = _PROGRESS.set(enabled)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


@lru_cache(maxsize=4)
def load_splits(name: str, data_dir: str | None = None, seed: int = 0,
                rotations: bool = True) -> dict[str, ImageClassDataset]:
    """``{"train", "val", "test"}`` of a dataset (cached per process).

    ``rotations`` adds the 90/180/270-degree rotations of every training character as new classes
    (the Omniglot protocol of MAML and Reptile); it applies to character datasets (glyphs,
    Omniglot) and is ignored for Mini-ImageNet. Progress is shown inside :func:`loading_progress`.
    """
    progress = _PROGRESS.get()
    if name in DATASET_LOADERS:
        with _loading(name, progress):
            return DATASET_LOADERS[name](data_dir, seed, rotations)
    key = name.lower().replace("-", "").replace("_", "")
    kwargs = {"augment_rotations": rotations} if key in ("glyphs", "omniglot") else {}
    with _loading(name, progress):
        return load_dataset(name, data_dir, seed=seed, progress=progress, **kwargs)


@contextmanager
def _loading(name: str, progress: bool) -> Iterator[None]:
    """A one-line tqdm status on stderr, ``loading NAME ...`` then ``loaded NAME`` with the seconds
    it took (reading a cached archive and splitting it has no finer steps to count)."""
    if not progress:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=1, desc=f"loading {name}", bar_format="{desc} ...", leave=True)
    tic = time.perf_counter()
    ok = False
    try:
        yield
        ok = True
    finally:
        if ok:
            bar.bar_format = "{desc}"
            bar.set_description_str(f"loaded {name} in {time.perf_counter() - tic:.1f} s", refresh=False)
            bar.update(1)
        else:
            bar.leave = False  # the error says what went wrong
        bar.close()


def build_fewshot_model(dataset: ImageClassDataset, n_way: int, model: str = "auto", filters: int | None = None,
                        norm: str = "batch", convention: str = "pytorch") -> nn.Module:
    """The paper's CNN for the dataset's image shape.

    ``model="auto"`` picks ``OmniglotCNN`` (64 filters, stride-2 convolutions) for images smaller
    than 64 pixels (glyphs, Omniglot: 28x28x1) and ``MiniImageNetCNN`` (32 filters, max-pooling)
    otherwise (Mini-ImageNet: 84x84x3). Channels and image size always come from the dataset.
    ``convention``: ``"pytorch"`` (default) or ``"tensorflow"``, the official code's Glorot-uniform
    initialization, zero biases and 'SAME' padding (:mod:`reptile.models`).
    """
    shape = dataset.image_shape
    assert shape is not None
    h, w = shape[:2]
    if h != w:
        raise ValueError(f"the few-shot CNNs expect square images, the dataset has {h}x{w}")
    if model == "auto":
        model = "omniglot" if h < 64 else "miniimagenet"
    if model not in ("omniglot", "miniimagenet"):
        raise ValueError(f"unknown few-shot model {model!r}; choose auto, omniglot or miniimagenet")
    cls = OmniglotCNN if model == "omniglot" else MiniImageNetCNN
    f = filters if filters is not None else (64 if model == "omniglot" else 32)
    return cls(n_way=n_way, in_channels=dataset.channels, filters=f, norm=norm, image_size=h, convention=convention)
