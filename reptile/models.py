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
1e-3, TensorFlow's default, as in the official code, in both conventions below.

Conventions (``convention=`` of the two CNNs; :data:`CONVENTIONS`):

* ``"pytorch"`` (default): PyTorch's default initialization (Kaiming-uniform weights with
  ``a = sqrt(5)``, biases uniform in ``+-1/sqrt(fan_in)``) and symmetric 1-pixel padding.
  The default because every checkpoint, the browser demo (``reptile/demo/models.js`` pads
  symmetrically) and every number measured so far in this project use it; it changes nothing
  for existing runs.
* ``"tensorflow"``: exactly what the official code (``tf.layers.conv2d``/``dense``,
  ``padding='same'``) builds: Glorot-uniform weights (``limit = sqrt(6 / (fan_in + fan_out))``,
  fans counting the 3x3 receptive field), zero biases, and TensorFlow 'SAME' padding: total
  padding ``max((ceil(n / s) - 1) * s + 3 - n, 0)`` per axis, the smaller half before and the
  larger after (28x28 at stride 2: 0 pixels top/left, 1 bottom/right). Output sizes equal the
  symmetric padding's, but at stride 2 the kernel sits one pixel differently, so the features
  differ. For Mini-ImageNet the convolutions have stride 1 (SAME is then symmetric) and the
  'same' 2x2 max-pool equals ``ceil_mode=True``, so only the initialization differs there.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

#: the two parameter/padding conventions of the CNNs (see the module docstring)
CONVENTIONS = ("pytorch", "tensorflow")

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


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one axis: ``(before, after)`` pixels.

    The output has ``ceil(size / stride)`` positions; the total padding is
    ``max((out - 1) * stride + kernel - size, 0)`` and ``before = total // 2`` (the extra pixel,
    if any, goes after), as ``tf.nn.conv2d`` does.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow 'SAME' padding (asymmetric when the total is odd).

    Same parameters (``weight [out, in, kh, kw]``, ``bias [out]``) and state-dict names as
    ``nn.Conv2d``; ``padding`` must be left at 0: the padding is computed from the input size
    at every call (:func:`same_padding`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top or bottom or left or right:
            x = nn.functional.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _conv(convention: str, c_in: int, c_out: int, stride: int) -> nn.Conv2d:
    if convention == "tensorflow":
        return SameConv2d(c_in, c_out, 3, stride=stride, padding=0)
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {CONVENTIONS} "
                         f"('tensorflow' matches the official code's initialization and padding)")


def tensorflow_init_(model: nn.Module) -> nn.Module:
    """Re-initialize ``model`` in place as TensorFlow 1's ``tf.layers`` do; returns it.

    Convolution and linear weights: Glorot (Xavier) uniform, ``U(-l, l)`` with
    ``l = sqrt(6 / (fan_in + fan_out))`` (``fan_in = in * kh * kw``, ``fan_out = out * kh * kw``:
    TensorFlow's and ``nn.init.xavier_uniform_``'s fans agree); biases 0; batch-norm scale 1 and
    offset 0 (already PyTorch's). Draws from torch's global RNG (use :func:`seeded_init`).
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


class OmniglotCNN(nn.Module):
    """The paper's Omniglot network. Input ``[b, in_channels, 28, 28]``, output logits ``[b, n_way]``.

    Each of the 4 blocks is ``features.<i>`` = Sequential(conv ``.0``, norm ``.1``, ReLU ``.2``);
    the head is ``classifier`` (``Linear(4 * filters, n_way)`` for 28x28 inputs).
    ``convention="tensorflow"`` builds the official code's initialization and 'SAME' padding
    (module docstring); the parameter names and shapes are the same in both conventions.
    """

    def __init__(self, n_way: int = 5, in_channels: int = 1, filters: int = 64, norm: str = "batch",
                 image_size: int = 28, convention: str = "pytorch") -> None:
        super().__init__()
        if n_way < 2:
            raise ValueError(f"n_way must be >= 2, got {n_way}")
        _check_convention(convention)
        blocks, c, size = [], in_channels, image_size
        for _ in range(4):
            blocks.append(nn.Sequential(_conv(convention, c, filters, 2), _norm_layer(norm, filters), nn.ReLU()))
            c, size = filters, (size + 1) // 2
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(filters * size * size, n_way)
        if convention == "tensorflow":
            tensorflow_init_(self)
        self.n_way, self.in_channels, self.filters, self.norm, self.image_size = n_way, in_channels, filters, norm, image_size
        self.convention = convention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class MiniImageNetCNN(nn.Module):
    """The paper's Mini-ImageNet network. Input ``[b, 3, 84, 84]``, output logits ``[b, n_way]``.

    Blocks ``features.<i>`` = Sequential(conv ``.0``, norm ``.1``, max-pool ``.2``, ReLU ``.3``).
    ``convention="tensorflow"``: the official code's initialization (its stride-1 'SAME'
    convolutions pad symmetrically, and the 'same' max-pool equals ``ceil_mode=True``).
    """

    def __init__(self, n_way: int = 5, in_channels: int = 3, filters: int = 32, norm: str = "batch",
                 image_size: int = 84, convention: str = "pytorch") -> None:
        super().__init__()
        if n_way < 2:
            raise ValueError(f"n_way must be >= 2, got {n_way}")
        _check_convention(convention)
        blocks, c, size = [], in_channels, image_size
        for _ in range(4):
            blocks.append(nn.Sequential(_conv(convention, c, filters, 1), _norm_layer(norm, filters),
                                        nn.MaxPool2d(2, ceil_mode=True), nn.ReLU()))
            c, size = filters, math.ceil(size / 2)
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(filters * size * size, n_way)
        if convention == "tensorflow":
            tensorflow_init_(self)
        self.n_way, self.in_channels, self.filters, self.norm, self.image_size = n_way, in_channels, filters, norm, image_size
        self.convention = convention

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
            kwargs = {"n_way": model.n_way, "in_channels": model.in_channels, "filters": model.filters,
                      "norm": model.norm, "image_size": model.image_size}
            if getattr(model, "convention", "pytorch") != "pytorch":
                # only when not the default, so specs (and checkpoints) written before the option existed still match
                kwargs["convention"] = model.convention
            return {"name": name, "kwargs": kwargs}
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
