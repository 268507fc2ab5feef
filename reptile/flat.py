"""A parameter dict as one flat buffer: the layout the compiled inner loop of :mod:`reptile.fast` runs on.

The compiled Reptile / FOMAML task keeps the parameters, the gradient and the optimizer moments
of one task as 1-d tensors of ``n`` entries (``n`` = number of parameters). Then the optimizer's
update is one fused kernel over ``n`` entries instead of one per leaf, and the compiled function
has a handful of tensor inputs instead of ~55 (the Omniglot CNN's 18 leaves, Adam's two moments
of each, the step counter, the minibatches): ``torch.compile`` checks its guards on every input at
every call, which cost ~23% of a compiled meta-iteration (``docs/benchmarks.md``).

A :class:`FlatLayout` says where every named leaf lives. With ``channels_last`` a 4-d leaf
``w[O, I, H, W]`` is stored in ``O, H, W, I`` order, so that its view has channels-last strides
(what oneDNN's convolutions want on a CPU) without a copy; otherwise a leaf is stored row-major,
and :meth:`FlatLayout.flatten` equals :func:`reptile.tree.flatten`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .types import Params

#: the one key of a flat "parameter dict" ``{FLAT: buffer}``, so that the optimizers of
#: :mod:`reptile.inner` (which step dicts of tensors) step a flat buffer unchanged
FLAT = "flat"


@dataclass(frozen=True)
class FlatLayout:
    """Names, shapes and storage order of the leaves of a parameter dict in one 1-d buffer.

    Hashable and immutable, so a compiled function can be kept per layout and dynamo treats it
    as a constant.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    channels_last: bool = False

    @classmethod
    def of(cls, params: Params, channels_last: bool = False) -> "FlatLayout":
        """The layout of ``params`` (its key order), 4-d leaves channels-last if asked."""
        return cls(tuple(params), tuple(tuple(v.shape) for v in params.values()), bool(channels_last))

    @property
    def numel(self) -> int:
        """``n``, the length of the flat buffer."""
        return sum(math.prod(s) for s in self.shapes)

    def _nhwc(self, shape: tuple[int, ...]) -> bool:
        return self.channels_last and len(shape) == 4

    def flatten(self, params: Params) -> Tensor:
        """``params`` (this layout's names and shapes) as one new 1-d tensor of :attr:`numel` entries."""
        if tuple(params) != self.names:
            raise ValueError(f"parameter names {list(params)} differ from the layout's {list(self.names)}")
        return torch.cat([(params[n].permute(0, 2, 3, 1) if self._nhwc(s) else params[n]).reshape(-1)
                          for n, s in zip(self.names, self.shapes)])

    def unflatten(self, flat: Tensor) -> Params:
        """Views of ``flat[n]`` shaped like the leaves (4-d leaves channels-last-strided with ``channels_last``)."""
        if flat.ndim != 1 or flat.numel() != self.numel:
            raise ValueError(f"expected a 1-d buffer of {self.numel} entries, got shape {tuple(flat.shape)}")
        out, i = {}, 0
        for n, s in zip(self.names, self.shapes):
            seg = flat[i:i + math.prod(s)]
            i += seg.numel()
            out[n] = seg.view(s[0], s[2], s[3], s[1]).permute(0, 3, 1, 2) if self._nhwc(s) else seg.view(s)
        return out

    def unflatten_copy(self, flat: Tensor) -> Params:
        """:meth:`unflatten` as separate row-major tensors (nothing shares ``flat``'s memory)."""
        return {n: v.clone(memory_format=torch.contiguous_format) for n, v in self.unflatten(flat).items()}

    def flatten_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """An optimizer state with every per-parameter dict (Adam's ``m``, ``v``) as ``{FLAT: buffer}``;
        other entries (the step counter) as they are."""
        return {k: {FLAT: self.flatten(v)} if isinstance(v, dict) else v for k, v in state.items()}

    def unflatten_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Inverse of :meth:`flatten_state`, with row-major leaves of their own."""
        return {k: self.unflatten_copy(v[FLAT]) if isinstance(v, dict) else v for k, v in state.items()}
