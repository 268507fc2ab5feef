"""The names the command line offers as choices, as plain tuples, so that building the ``reptile``
parser (and printing ``--help``) never imports torch.

Each tuple equals a registry of the science, which stays the source of truth; a test
(tests/test_cli_newcomer.py) checks that they agree:

* :data:`ALGORITHMS` -- :data:`reptile.algorithms.ALGORITHMS` (its names, in order);
* :data:`SCHEDULES` -- :data:`reptile.tasks.schedules.SCHEDULES`;
* :data:`PRESETS` -- ``sorted(reptile.fewshot.PRESETS)``;
* :data:`DATASETS` -- :data:`reptile.fewshot.datasets.BUILTIN_DATASETS` (datasets registered with
  :func:`reptile.fewshot.register_dataset` are added by :func:`reptile.cli.fewshot.dataset_choices`).
"""
from __future__ import annotations

ALGORITHMS: tuple[str, ...] = ("reptile", "fomaml", "maml", "combination", "joint")
SCHEDULES: tuple[str, ...] = ("cycle", "replacement", "separate_tail", "shared_tail")
PRESETS: tuple[str, ...] = ("miniimagenet-5w1s", "miniimagenet-5w5s", "omniglot-20w1s", "omniglot-20w5s",
                            "omniglot-5w1s", "omniglot-5w5s")
DATASETS: tuple[str, ...] = ("glyphs", "omniglot", "miniimagenet")
