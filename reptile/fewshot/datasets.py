"""Few-shot datasets by name (built-in and registered) and the paper's CNN for a dataset."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

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


@lru_cache(maxsize=4)
def load_splits(name: str, data_dir: str | None = None, seed: int = 0,
                rotations: bool = True) -> dict[str, ImageClassDataset]:
    """``{"train", "val", "test"}`` of a dataset (cached per process).

    ``rotations`` adds the 90/180/270-degree rotations of every training character as new classes
    (the Omniglot protocol of MAML and Reptile); it applies to character datasets (glyphs,
    Omniglot) and is ignored for Mini-ImageNet.
    """
    if name in DATASET_LOADERS:
        return DATASET_LOADERS[name](data_dir, seed, rotations)
    key = name.lower().replace("-", "").replace("_", "")
    kwargs = {"augment_rotations": rotations} if key in ("glyphs", "omniglot") else {}
    return load_dataset(name, data_dir, seed=seed, **kwargs)


def build_fewshot_model(dataset: ImageClassDataset, n_way: int, model: str = "auto", filters: int | None = None,
                        norm: str = "batch") -> nn.Module:
    """The paper's CNN for the dataset's image shape.

    ``model="auto"`` picks ``OmniglotCNN`` (64 filters, stride-2 convolutions) for images smaller
    than 64 pixels (glyphs, Omniglot: 28x28x1) and ``MiniImageNetCNN`` (32 filters, max-pooling)
    otherwise (Mini-ImageNet: 84x84x3). Channels and image size always come from the dataset.
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
    return cls(n_way=n_way, in_channels=dataset.channels, filters=f, norm=norm, image_size=h)
