"""N-way K-shot episodes (few-shot classification tasks) drawn from an image dataset.

The protocol of the Reptile paper (section 6 and the official code's ``sample_mini_dataset``):
choose ``n_way`` classes at random, relabel them ``0..n_way-1`` in a random order, take
``train_shots`` examples of each class for the inner loop and, for evaluation, ``test_shots``
further examples of each class (one in the official code) that are never among the training
examples. Minibatching of the training examples is the engine's job
(``reptile.tasks.schedules.minibatch_indices``), not this module's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reptile.data.images import ImageClassDataset, images_to_tensor

__all__ = ["Episode", "sample_episode", "contact_sheet"]


@dataclass(frozen=True, eq=False)
class Episode:
    """One N-way few-shot task.

    Attributes:
        train_x: ``[n_way * train_shots, C, H, W]`` training (support) images in [0, 1].
        train_y: int64 ``[n_way * train_shots]`` labels in ``0..n_way-1``.
        test_x: ``[n_way * test_shots, C, H, W]`` held-out (query) images, none of them among
            the training images.
        test_y: int64 ``[n_way * test_shots]`` labels in ``0..n_way-1``.
        classes: int64 ``[n_way]``: ``classes[label]`` is the dataset class index of ``label``.

    Examples are grouped by label (label 0's shots first); shuffle through the minibatch
    schedule, not here.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: np.ndarray

    @property
    def n_way(self) -> int:
        """Number of classes of the task."""
        return len(self.classes)


def sample_episode(
    dataset: ImageClassDataset,
    rng: np.random.Generator,
    n_way: int,
    train_shots: int,
    test_shots: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Episode:
    """Draw one ``n_way``-way ``train_shots``-shot task from ``dataset``.

    Args:
        dataset: the classes to draw from (e.g. the meta-training split).
        rng: the only source of randomness (``numpy.random.default_rng(seed)``); the same
            generator state gives the same episode.
        n_way: classes per task (paper: 5 or 20).
        train_shots: training examples per class (paper: 1 or 5 at evaluation; 10 (Omniglot) or
            15 (Mini-ImageNet) during meta-training, Tables 3-4).
        test_shots: held-out examples per class (official code: 1). May be 0.
        device, dtype: where and how to put the tensors.

    Returns:
        An :class:`Episode`; ``train_x`` is ``[n_way * train_shots, C, H, W]``.

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator``.
        ValueError: ``n_way`` larger than the number of classes, ``train_shots + test_shots``
            larger than the smallest class, or non-positive sizes.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)), got {type(rng).__name__}"
        )
    if n_way < 1 or train_shots < 1 or test_shots < 0:
        raise ValueError(
            f"need n_way >= 1, train_shots >= 1 and test_shots >= 0, got n_way={n_way}, "
            f"train_shots={train_shots}, test_shots={test_shots}"
        )
    if n_way > dataset.n_classes:
        raise ValueError(
            f"cannot draw a {n_way}-way task from a dataset of {dataset.n_classes} classes; "
            f"use n_way <= {dataset.n_classes} or a split with more classes"
        )
    per_class = train_shots + test_shots
    if per_class > dataset.min_class_size:
        small = int(np.argmin(dataset.class_sizes))
        raise ValueError(
            f"train_shots + test_shots = {train_shots} + {test_shots} = {per_class} examples per class, "
            f"but class {dataset.class_names[small]!r} has only {dataset.min_class_size}; lower the "
            f"shots to at most {dataset.min_class_size} in total or drop classes smaller than "
            f"{per_class} (dataset.subset)"
        )
    classes = rng.choice(dataset.n_classes, size=n_way, replace=False)
    train, test = [], []
    for c in classes:
        arr = dataset.images[int(c)]
        pick = rng.choice(len(arr), size=per_class, replace=False)
        chosen = arr[pick]  # fancy indexing copies (also materialises rotated views)
        train.append(chosen[:train_shots])
        test.append(chosen[train_shots:])
    labels = np.arange(n_way, dtype=np.int64)
    train_y = torch.from_numpy(np.repeat(labels, train_shots))
    test_y = torch.from_numpy(np.repeat(labels, test_shots))
    return Episode(
        train_x=images_to_tensor(np.concatenate(train), device=device, dtype=dtype),
        train_y=train_y.to(device),
        test_x=images_to_tensor(np.concatenate(test), device=device, dtype=dtype),
        test_y=test_y.to(device),
        classes=classes.astype(np.int64),
    )


def contact_sheet(
    dataset: ImageClassDataset,
    rng: np.random.Generator,
    n_tasks: int = 4,
    n_way: int = 5,
    train_shots: int = 5,
    test_shots: int = 1,
    title: str | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """A matplotlib figure of sample episodes: one panel per task, one row per class.

    Each row shows a class's ``train_shots`` training images, a gap, then its ``test_shots``
    held-out images, labelled with the class name (e.g. ``"Armenian/U+0562"``).

    Returns:
        ``(figure, rows)``: the figure (the caller saves and closes it) and one dict per class
        shown (``task``, ``label``, ``class_name``, ``group``) for a CSV beside the image.
    """
    import matplotlib.pyplot as plt

    cols = min(n_tasks, 2)
    nrows = -(-n_tasks // cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(3.6 * cols, (0.36 * n_way + 0.4) * nrows + 0.3), squeeze=False, layout="constrained"
    )
    table: list[dict[str, Any]] = []
    for t in range(nrows * cols):
        ax = axes[t // cols][t % cols]
        ax.axis("off")
        if t >= n_tasks:
            continue
        ep = sample_episode(dataset, rng, n_way, train_shots, test_shots)
        tx = ep.train_x.numpy()  # [n*k, C, H, W]
        qx = ep.test_x.numpy()
        h, w = tx.shape[2], tx.shape[3]
        pad, gap = 2, 8
        grid_w = train_shots * (w + pad) + gap + test_shots * (w + pad)
        canvas = np.ones((n_way * (h + pad), grid_w, tx.shape[1]), dtype=np.float32)
        for label in range(n_way):
            y = label * (h + pad)
            for s in range(train_shots):
                x = s * (w + pad)
                canvas[y : y + h, x : x + w] = tx[label * train_shots + s].transpose(1, 2, 0)
            for s in range(test_shots):
                x = train_shots * (w + pad) + gap + s * (w + pad)
                canvas[y : y + h, x : x + w] = qx[label * test_shots + s].transpose(1, 2, 0)
            c = int(ep.classes[label])
            name = dataset.class_names[c]
            ax.text(-3, y + h / 2, name, ha="right", va="center", fontsize=6)
            table.append({"task": t, "label": label, "class_name": name, "group": dataset.groups[c]})
        image = canvas[..., 0] if canvas.shape[2] == 1 else canvas
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"task {t + 1}: {n_way}-way, {train_shots} shots | test", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    return fig, table
