"""The paper's models, as plain ``nn.Module``s (no meta-layers: torch.func does the rest).

* :class:`MLP` -- the sine-wave regressor. ``MLP((1, 64, 64, 1), "tanh")`` is the Reptile blog's
  model, ``MLP((1, 40, 40, 1), "relu")`` MAML's.
* :class:`OmniglotCNN` -- 4 x [conv 3x3, stride 2, padding 1 -> norm -> ReLU] -> linear;
  28x28 inputs give a 2x2xC feature map (256 features for C = 64).
* :class:`MiniImageNetCNN` -- 4 x [conv 3x3, padding 1 -> norm -> max-pool 2x2 (ceil, like TF
  'same') -> ReLU] -> linear; 84x84 inputs give 6x6xC (1152 features for C = 32).

Norms: ``"batch"`` uses the statistics of the current batch always, as the paper and its
official code do (``track_running_stats=False``: no buffers, nothing mutated, so ``jvp`` and
``vmap`` work); ``"group"`` is GroupNorm; ``"none"`` skips normalization. Batch norm eps is
1e-3, TensorFlow's default, as in the official code. The official TF code pads stride-2
convolutions asymmetrically ('same'); here padding is symmetric (1 pixel), which gives the same
output sizes.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "elu": nn.ELU}
NORMS = ("batch", "group", "none")


class MLP(nn.Module):
    """Fully connected network ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between layers.

    Input ``[b, sizes[0]]``, output ``[b, sizes[-1]]``. Parameters are named ``net.<i>.weight``
    and ``net.<i>.bias`` with ``i`` the index in the ``nn.Sequential`` (0, 2, 4, ...).
    """

    def __init__(self, sizes: Sequence[int] = (1, 64, 64, 1), activation: str = "tanh") -> None:
        super().__init__()
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"MLP sizes must be at least two positive widths, got {list(sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(int(a), int(b)))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.sizes, self.activation = [int(s) for s in sizes], activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, eps=1e-3, track_running_stats=False)
    if norm == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels, eps=1e-3)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")


class OmniglotCNN(nn.Module):
    """The paper's Omniglot network. Input ``[b, in_channels, 28, 28]``, output logits ``[b, n_way]``.

    Each of the 4 blocks is ``features.<i>`` = Sequential(conv ``.0``, norm ``.1``, ReLU ``.2``);
    the head is ``classifier`` (``Linear(4 * filters, n_way)`` for 28x28 inputs).
    """

    def __init__(self, n_way: int = 5, in_channels: int = 1, filters: int = 64, norm: str = "batch",
                 image_size: int = 28) -> None:
        super().__init__()
        if n_way < 2:
            raise ValueError(f"n_way must be >= 2, got {n_way}")
        blocks, c, size = [], in_channels, image_size
        for _ in range(4):
            blocks.append(nn.Sequential(nn.Conv2d(c, filters, 3, stride=2, padding=1),
                                        _norm_layer(norm, filters), nn.ReLU()))
            c, size = filters, (size + 1) // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(filters * size * size, n_way)
        self.n_way, self.in_channels, self.filters, self.norm, self.image_size = n_way, in_channels, filters, norm, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class MiniImageNetCNN(nn.Module):
    """The paper's Mini-ImageNet network. Input ``[b, 3, 84, 84]``, output logits ``[b, n_way]``.

    Blocks ``features.<i>`` = Sequential(conv ``.0``, norm ``.1``, max-pool ``.2``, ReLU ``.3``).
    """

    def __init__(self, n_way: int = 5, in_channels: int = 3, filters: int = 32, norm: str = "batch",
                 image_size: int = 84) -> None:
        super().__init__()
        if n_way < 2:
            raise ValueError(f"n_way must be >= 2, got {n_way}")
        blocks, c, size = [], in_channels, image_size
        for _ in range(4):
            blocks.append(nn.Sequential(nn.Conv2d(c, filters, 3, padding=1), _norm_layer(norm, filters),
                                        nn.MaxPool2d(2, ceil_mode=True), nn.ReLU()))
            c, size = filters, math.ceil(size / 2)
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(filters * size * size, n_way)
        self.n_way, self.in_channels, self.filters, self.norm, self.image_size = n_way, in_channels, filters, norm, image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


MODELS = {"mlp": MLP, "omniglot": OmniglotCNN, "miniimagenet": MiniImageNetCNN}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by registry name (``"mlp"``, ``"omniglot"``, ``"miniimagenet"``).

    Raises:
        ValueError: unknown name, or arguments the model does not take.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for model {name!r}: {e}") from e


def seeded_init(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a model with torch's RNG seeded by ``seed``, leaving the global RNG state untouched."""
    from .limits import check_model_size
    check_model_size(build)  # counted on the meta device: a huge size is refused before it is allocated
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def model_spec(model: nn.Module) -> dict[str, Any]:
    """A JSON-able description from which :func:`build_model` rebuilds ``model`` (for checkpoints)."""
    if isinstance(model, MLP):
        return {"name": "mlp", "kwargs": {"sizes": list(model.sizes), "activation": model.activation}}
    if isinstance(model, LinearModel):
        return {"name": "linear", "kwargs": {"dim": model.dim, "bias": model.bias}}
    for name, cls in MODELS.items():
        if type(model) is cls:
            return {"name": name, "kwargs": {"n_way": model.n_way, "in_channels": model.in_channels,
                                             "filters": model.filters, "norm": model.norm,
                                             "image_size": model.image_size}}
    raise ValueError(f"no spec for model type {type(model).__name__}; use a model from reptile.models")


class LinearModel(nn.Module):
    """Linear regressor ``y = x . w`` (no bias by default): input ``[b, dim]``, output ``[b, 1]``.

    Its single parameter ``linear.weight`` has shape ``[1, dim]``; least-squares tasks on it have
    a constant Hessian and, when underdetermined, an affine subspace of solutions.
    """

    def __init__(self, dim: int = 2, bias: bool = False) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.linear = nn.Linear(dim, 1, bias=bias)
        self.dim, self.bias = dim, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


MODELS["linear"] = LinearModel
