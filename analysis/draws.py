"""Many draws of a least-squares task sampler at once: the same numbers, bit for bit, faster.

``reptile verify``'s coefficient claims draw ~80,000 least-squares tasks, each from its own
generator ``numpy.random.default_rng([seed, s])`` (so any draw can be recomputed alone). One draw
(:func:`analysis.problems.least_squares_problem`'s sampler) is a task (``dist.sample_arrays``),
then k minibatches of b distinct examples, each ``rng.choice(m, size=b, replace=False)``: ~70
microseconds, most of it numpy's per-call overhead (``Generator.choice`` takes ~5 for what is a
handful of integers). What ``choice`` draws is 2b - 1 bounded integers (Floyd's algorithm: ``j``
from ``m - b`` to ``m - 1``, a uniform integer in ``0..j`` each; then a Fisher-Yates shuffle:
``i`` from ``b - 1`` down to 1, a uniform integer in ``0..i`` each), each from the next 32-bit
half of the generator's 64-bit outputs by Lemire's method. :class:`ManyDraws` takes those outputs
in one ``random_raw`` call per draw and does the rest for all draws of a chunk at once in numpy
(:func:`choice_integers`, :func:`choices_from_integers`); a draw where Lemire's method could have
rejected a number (~1e-8 per integer) is made the plain way.

That is numpy's implementation (``_generator.pyx``, ``distributions.c``), not its documented API,
so every call compares its first draws with the plain sampler and, if they ever differ, draws
one by one as before (tests/test_verify_speed.py compares the two for many seeds and sizes).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from reptile.types import Batch

#: draws compared with the plain sampler at the start of every :meth:`ManyDraws.__call__`
SELF_CHECK = 2


def _bounds(m: int, b: int, k: int) -> np.ndarray:
    """Exclusive upper bounds of the 2b - 1 integers one ``choice(m, b, replace=False)`` draws, k times."""
    one = np.concatenate([np.arange(m - b + 1, m + 1), np.arange(b, 1, -1)])
    return np.tile(one, k)


def choice_integers(raw: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounded integers of :func:`_bounds` from raw 64-bit generator outputs ``raw[..., words]``
    (``rng.bit_generator.random_raw``), as numpy draws them: each ``uniform in 0..bound-1`` takes
    the next 32-bit half (low half of a word first: PCG64's ``next_uint32``) and Lemire's method,
    ``(v * bound) >> 32``. Returns ``(integers[..., len(bounds)], unsure[...])``: ``unsure`` where
    Lemire's rejection step could have drawn again (``(v * bound) mod 2^32 < bound``: probability
    ~1e-8 per integer here), so those draws must be made the plain way."""
    halves = np.stack([raw & np.uint64(0xFFFFFFFF), raw >> np.uint64(32)], -1).reshape(raw.shape[:-1] + (-1,))
    m = halves[..., :len(bounds)] * bounds.astype(np.uint64)
    unsure = ((m & np.uint64(0xFFFFFFFF)) < bounds.astype(np.uint64)).any(-1)
    return (m >> np.uint64(32)).astype(np.int64), unsure


def choices_from_integers(r: np.ndarray, m: int, b: int) -> np.ndarray:
    """``[..., k, b]`` samples without replacement of ``0..m-1`` from the integers ``r[..., k, 2b - 1]``
    of :func:`choice_integers`: Floyd's selection, then the Fisher-Yates shuffle, as
    ``Generator.choice`` does it (vectorized over the leading axes)."""
    sel = np.empty(r.shape[:-1] + (b,), dtype=np.int64)
    for t in range(b):                      # Floyd: take r_t unless already taken, else j = m - b + t
        cand = r[..., t]
        if t:
            cand = np.where((sel[..., :t] == cand[..., None]).any(-1), m - b + t, cand)
        sel[..., t] = cand
    for step, i in enumerate(range(b - 1, 0, -1)):   # shuffle: swap positions i and r
        j = r[..., b + step][..., None]
        at_i = sel[..., i].copy()
        sel[..., i] = np.take_along_axis(sel, j, -1)[..., 0]
        np.put_along_axis(sel, j, at_i[..., None], -1)
    return sel


class ManyDraws:
    """``many(seed, start, stop) -> (x[n, k, b, d], y[n, k, b, 1])``: draws ``start..stop-1`` of a
    least-squares sampler (generator ``default_rng([seed, s])`` each), stacked.

    Args:
        sample_arrays: ``rng -> (w, inputs[m, d], targets[m])`` (``LeastSquaresTaskDistribution.sample_arrays``).
        scales: ``[d]`` factors applied to the input columns (``x = inputs * scales``).
        k, b: minibatches per draw and their size.
        dtype: of the returned tensors.
        one: the plain sampler ``rng -> (x[k, b, d], y[k, b, 1])`` these draws must equal.
    """

    def __init__(self, sample_arrays: Callable, scales: np.ndarray, k: int, b: int, dtype: torch.dtype,
                 one: Callable[[np.random.Generator], Batch]) -> None:
        self.sample_arrays, self.scales, self.k, self.b, self.dtype, self.one = sample_arrays, scales, k, b, dtype, one
        self.trusted: bool | None = None     # None: not checked yet

    def _plain(self, seed: int, start: int, stop: int) -> Batch:
        part = [self.one(np.random.default_rng([seed, s])) for s in range(start, stop)]
        return torch.stack([x for x, _ in part]), torch.stack([y for _, y in part])

    def __call__(self, seed: int, start: int, stop: int) -> Batch:
        if self.trusted is False or stop <= start:
            return self._plain(seed, start, stop)
        inputs, targets, words, m = [], [], [], None
        n_words = (self.k * (2 * self.b - 1) + 1) // 2
        for s in range(start, stop):
            rng = np.random.default_rng([seed, s])
            _, a, t = self.sample_arrays(rng)
            inputs.append(a)
            targets.append(t)
            words.append(rng.bit_generator.random_raw(n_words))
        m = len(inputs[0])
        if not 1 <= self.b < m <= 10_000 or any(len(a) != m for a in inputs):
            # b = m has a bound of 1 (no number taken); b > m: the plain sampler raises; m > 10,000: another algorithm
            self.trusted = False
            return self._plain(seed, start, stop)
        ints, unsure = choice_integers(np.stack(words), _bounds(m, self.b, self.k))
        idx = choices_from_integers(ints.reshape(len(ints), self.k, 2 * self.b - 1), m, self.b)
        rows = np.arange(len(ints))[:, None, None]
        x = np.stack(inputs)[rows, idx] * self.scales
        y = np.stack(targets)[rows, idx][..., None]
        out = torch.as_tensor(x, dtype=self.dtype), torch.as_tensor(y, dtype=self.dtype)
        for i in np.nonzero(unsure)[0]:    # Lemire may have rejected a number: draw these the plain way
            out[0][i], out[1][i] = self.one(np.random.default_rng([seed, start + int(i)]))
        n_check = min(SELF_CHECK, stop - start)
        ref = self._plain(seed, start, start + n_check)
        if not (torch.equal(ref[0], out[0][:n_check]) and torch.equal(ref[1], out[1][:n_check])):
            self.trusted = False      # numpy draws differently from what this module assumes
            return self._plain(seed, start, stop)
        self.trusted = True
        return out
