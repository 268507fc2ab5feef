"""The official ``--foml-tail`` schedule (``class_tail``): T shots per class reserved, whole tail last."""
from __future__ import annotations

import numpy as np
import pytest

from reptile.tasks.schedules import LABELED_SCHEDULES, SCHEDULES, class_tail_indices, minibatch_indices


@pytest.mark.parametrize("n_way,shots,tail,k,b", [(5, 20, 5, 4, 25), (5, 10, 2, 3, 10), (3, 6, 2, 7, 6), (5, 4, 1, 1, 5)])
def test_tail_is_per_class_disjoint_and_last(n_way, shots, tail, k, b):
    labels = np.repeat(np.arange(n_way), shots)  # grouped by label, as reptile.data.Episode
    idx = minibatch_indices(len(labels), k, b, "class_tail", np.random.default_rng(0), tail=tail, labels=labels)
    assert idx.shape == (k, b)
    last = idx[-1]
    assert len(set(last)) == b  # distinct examples
    assert np.array_equal(np.bincount(labels[last], minlength=n_way), np.full(n_way, tail))  # T shots of each class
    head = idx[:-1].ravel()
    assert not set(head) & set(last)  # never overlaps the earlier batches
    if k > 1:
        n_head = len(labels) - n_way * tail
        # the earlier batches cycle over the n_head other examples: each used floor/ceil equally often
        counts = np.bincount(head, minlength=len(labels))[np.setdiff1d(np.arange(len(labels)), last)]
        assert counts.max() - counts.min() <= 1 and counts.sum() == (k - 1) * b and len(counts) == n_head


def test_same_rng_same_batches_and_defaults():
    labels = np.repeat(np.arange(5), 20)
    a = class_tail_indices(labels, 4, 25, None, np.random.default_rng(7))  # tail defaults to 25 / 5 = 5
    b = class_tail_indices(labels, 4, 25, 5, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert "class_tail" in LABELED_SCHEDULES and "class_tail" not in SCHEDULES


def test_errors_name_the_fix():
    labels = np.repeat(np.arange(5), 4)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="needs labels"):
        minibatch_indices(20, 2, 5, "class_tail", rng)
    with pytest.raises(ValueError, match="must fill exactly one batch"):
        class_tail_indices(labels, 2, 10, 1, rng)
    with pytest.raises(ValueError, match="not a multiple"):
        class_tail_indices(labels, 2, 7, None, rng)
    with pytest.raises(ValueError, match="leaves none"):
        class_tail_indices(labels, 2, 20, 4, rng)
    with pytest.raises(ValueError, match="unknown minibatch schedule"):
        minibatch_indices(20, 2, 5, "tail", rng)
