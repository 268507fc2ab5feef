"""N-way K-shot episode sampling: distinct classes, right shots, labels 0..n-1, disjoint test."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reptile.data.episodes import sample_episode
from reptile.data.images import ImageClassDataset


def _unique_dataset(n_classes: int = 12, n: int = 20, rgb: bool = False) -> ImageClassDataset:
    """Every image is constant with a unique value, so an image identifies (class, index)."""
    shape = (4, 4, 3) if rgb else (4, 4)
    images = []
    for c in range(n_classes):
        vals = (c * n + np.arange(n)) / (n_classes * n)
        images.append(np.broadcast_to(vals.reshape(-1, *[1] * len(shape)), (n, *shape)).astype(np.float32))
    return ImageClassDataset(images, [f"c{c}" for c in range(n_classes)], ["g"] * n_classes)


def _ids(x: torch.Tensor, n_classes: int = 12, n: int = 20) -> np.ndarray:
    return np.rint(x[:, 0, 0, 0].double().numpy() * n_classes * n).astype(int)


@pytest.mark.parametrize("n_way,train_shots,test_shots", [(5, 1, 1), (5, 5, 1), (12, 10, 3), (3, 4, 0)])
def test_episode_structure(n_way, train_shots, test_shots):
    ds = _unique_dataset()
    ep = sample_episode(ds, np.random.default_rng(3), n_way, train_shots, test_shots)
    assert ep.train_x.shape == (n_way * train_shots, 1, 4, 4)
    assert ep.test_x.shape == (n_way * test_shots, 1, 4, 4)
    assert ep.train_y.dtype == torch.int64 and ep.test_y.dtype == torch.int64
    assert sorted(set(ep.train_y.tolist())) == list(range(n_way))
    assert np.bincount(ep.train_y.numpy(), minlength=n_way).tolist() == [train_shots] * n_way
    assert len(set(ep.classes.tolist())) == n_way  # distinct classes
    train_ids, test_ids = _ids(ep.train_x), _ids(ep.test_x)
    assert len(set(train_ids)) == len(train_ids)
    assert not set(train_ids) & set(test_ids)  # no test example among the training examples
    # each label's images come from the class it stands for
    for ids, y in ((train_ids, ep.train_y), (test_ids, ep.test_y)):
        for i, label in zip(ids, y.tolist()):
            assert i // 20 == ep.classes[label]


def test_labels_are_a_random_remapping_and_deterministic():
    ds = _unique_dataset()
    a = sample_episode(ds, np.random.default_rng(0), 5, 2)
    b = sample_episode(ds, np.random.default_rng(0), 5, 2)
    torch.testing.assert_close(a.train_x, b.train_x)
    assert a.classes.tolist() == b.classes.tolist()
    orders = {tuple(sample_episode(ds, np.random.default_rng(s), 5, 1).classes) for s in range(20)}
    assert any(list(o) != sorted(o) for o in orders)  # class order is shuffled, not sorted


def test_rgb_and_dtype_device():
    ds = _unique_dataset(rgb=True)
    ep = sample_episode(ds, np.random.default_rng(0), 4, 2, device="cpu", dtype=torch.float64)
    assert ep.train_x.shape == (8, 3, 4, 4) and ep.train_x.dtype == torch.float64


def test_clear_errors():
    ds = _unique_dataset(n_classes=4, n=6)
    with pytest.raises(ValueError, match=r"5-way.*4 classes"):
        sample_episode(ds, np.random.default_rng(0), 5, 1)
    with pytest.raises(ValueError, match=r"5 \+ 2 = 7.*only 6.*at most 6"):
        sample_episode(ds, np.random.default_rng(0), 2, 5, 2)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        sample_episode(ds, 0, 2, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="train_shots >= 1"):
        sample_episode(ds, np.random.default_rng(0), 2, 0)
