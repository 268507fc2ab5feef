"""Flags of the least-squares family (``reptile train least-squares``); the family itself is
:class:`reptile.families.LeastSquaresConfig` / :func:`reptile.families.build_least_squares`."""
from __future__ import annotations

import argparse

from .argtypes import nonneg_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("least squares")
    g.add_argument("--dim", type=positive_int, default=10, help="weights per task (default 10)")
    g.add_argument("--ls-points", type=positive_int, default=5,
                   help="examples per task; fewer than --dim is underdetermined (default 5)")
    g.add_argument("--noise", type=nonneg_float, default=0.0, help="target noise standard deviation (default 0)")
