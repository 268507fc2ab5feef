"""Meta-training tasks of the few-shot protocol: N-way episodes as stacked inner-loop minibatches."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.episodes import sample_episode
from ..data.images import ImageClassDataset
from ..fast import channels_last_images, channels_last_params
from ..tasks.schedules import SCHEDULES, gather, minibatch_indices
from ..types import Batch

#: images ``[..., C, H, W]`` stored channels-last: :func:`reptile.fast.channels_last_images`
to_channels_last = channels_last_images
#: convolution kernels (4-d leaves) channels-last, others unchanged: :func:`reptile.fast.channels_last_params`
params_channels_last = channels_last_params


def episode_batches(x: Tensor, y: Tensor, inner_steps: int, inner_batch: int, rng: np.random.Generator,
                    schedule: str = "cycle", tail: int | None = None) -> Batch:
    """Stack ``inner_steps`` minibatches of ``inner_batch`` of a task's examples ``x[n, ...], y[n]``.

    Returns ``(x[k, b, ...], y[k, b])`` following ``schedule`` (see
    :func:`reptile.tasks.schedules.minibatch_indices`).
    """
    return gather(x, y, minibatch_indices(len(x), inner_steps, inner_batch, schedule, rng, tail))


@dataclass
class EpisodeSampler:
    """Draws one meta-training task: an N-way episode of ``train_shots`` examples per class.

    ``sampler(rng)`` returns ``(x[inner_steps, inner_batch, C, H, W], y[inner_steps, inner_batch])``
    with labels in ``0..ways-1``; only the episode's training examples are used (no held-out
    examples are drawn during meta-training, as in the official code).
    """

    dataset: ImageClassDataset
    ways: int
    train_shots: int
    inner_steps: int
    inner_batch: int
    schedule: str = "cycle"
    tail: int | None = None
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float32
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown minibatch schedule {self.schedule!r}; choose one of {SCHEDULES}")
        n = self.ways * self.train_shots
        if self.schedule != "separate_tail" and self.inner_batch > n:
            raise ValueError(f"inner batch {self.inner_batch} exceeds the {n} training examples of a "
                             f"{self.ways}-way {self.train_shots}-shot task; lower `inner_batch` or raise `train_shots`")

    def __call__(self, rng: np.random.Generator) -> Batch:
        ep = sample_episode(self.dataset, rng, self.ways, self.train_shots, test_shots=0, device=self.device,
                            dtype=self.dtype)
        x, y = episode_batches(ep.train_x, ep.train_y, self.inner_steps, self.inner_batch, rng, self.schedule,
                               self.tail)
        return (to_channels_last(x) if self.channels_last else x), y
