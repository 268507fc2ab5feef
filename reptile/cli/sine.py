"""Flags of the sine-wave family (``reptile train sine``); the family itself is
:class:`reptile.families.SineConfig` / :func:`reptile.families.build_sine`."""
from __future__ import annotations

import argparse

from .argtypes import nonneg_int, positive_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sine waves")
    g.add_argument("--variant", choices=("reptile", "maml"), default="reptile",
                   help="reptile: phase in [0, 2pi], 50-point grid (paper/blog); maml: phase in [0, pi], K uniform points")
    g.add_argument("--hidden", default="64,64", help="hidden widths of the MLP, comma separated (default 64,64)")
    g.add_argument("--activation", default="tanh", help="MLP activation: tanh (blog), relu (MAML), gelu, elu")
    g.add_argument("--points", type=positive_int, default=None,
                   help="examples per task during meta-training (default 50 grid points, or 10 for --variant maml)")
    # --shots (test points) is shared with the few-shot family: reptile.cli.train adds it once
    g.add_argument("--test-steps", type=nonneg_int, default=32, help="SGD steps at test time (default 32)")
    g.add_argument("--test-lr", type=positive_float, default=0.02, help="SGD step size at test time (default 0.02)")
