"""Flags of the few-shot family (``reptile train fewshot`` / ``--preset``) and the command
``python -m reptile.fewshot report``; the science is :mod:`reptile.fewshot`."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

from .. import choices
from .argtypes import add_threads_flag, nonneg_int, positive_int
from .parsing import flag_words, parse_args


def dataset_choices() -> list[str]:
    """``--dataset`` choices without importing torch: the built-in names, plus any registered with
    :func:`reptile.fewshot.register_dataset` (registering imports that module, so it is loaded)."""
    names = set(choices.DATASETS)
    datasets = sys.modules.get("reptile.fewshot.datasets")
    if datasets is not None:
        names |= set(datasets.dataset_names())
    return sorted(names)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "few-shot classification (family 'fewshot'; paper section 6, appendix Tables 3-4)",
        "Unset values come from --preset (default omniglot-5w1s). Image size and channels come from "
        "the dataset: glyphs/omniglot 28x28x1 -> OmniglotCNN, miniimagenet 84x84x3 -> MiniImageNetCNN. "
        "--algorithm maml differentiates through the Adam inner loop (second order): exact but slow "
        "and memory-hungry, growing with --inner-steps; fomaml and reptile are first order.")
    g.add_argument("--preset", choices=choices.PRESETS, default=None,
                   help="hyper-parameters of the paper's Table 3/4 column (implies the fewshot family); "
                        "any flag given explicitly overrides it")
    g.add_argument("--dataset", choices=dataset_choices(), default="glyphs",
                   help="glyphs (generated from fonts, always available; default), omniglot or miniimagenet "
                        "(read from --data-dir)")
    g.add_argument("--data-dir", default=None,
                   help="folder of Omniglot/Mini-ImageNet (see docs/data.md), or the glyph cache folder")
    g.add_argument("--no-rotations", action="store_true",
                   help="do not add 90/180/270-degree rotations of training characters as new classes "
                        "(the Omniglot protocol adds them; glyphs/omniglot only)")
    g.add_argument("--ways", type=positive_int, default=None, help="N: classes per task")
    # --shots (K) is shared with the sine family: reptile.cli.train adds it once
    g.add_argument("--train-shots", type=positive_int, default=None,
                   help="examples per class of a meta-training task (paper: 10 Omniglot, 15 Mini-ImageNet)")
    g.add_argument("--tail", type=positive_int, default=None,
                   help="--schedule separate_tail: examples reserved for the last minibatch (default --inner-batch)")
    g.add_argument("--eval-inner-steps", type=nonneg_int, default=None,
                   help="fine-tuning steps on a test task (paper: 50)")
    g.add_argument("--eval-inner-batch", type=positive_int, default=None, help="fine-tuning minibatch size (Tables 3-4)")
    g.add_argument("--test-shots", type=positive_int, default=1, help="held-out examples per class of a test task (default 1)")
    g.add_argument("--eval-split", choices=("test", "val", "train"), default="test",
                   help="split the evaluation tasks come from (default test: unseen alphabets/classes)")
    g.add_argument("--transductive", action="store_true",
                   help="also report transductive accuracy (the whole test set in one batch, batch-norm "
                        "statistics shared); the default protocol is non-transductive")
    g.add_argument("--eval-state", choices=("checkpoint", "fresh"), default="checkpoint",
                   help="Adam moments each test task starts from: those saved with the evaluated checkpoint "
                        "(official code; default) or fresh ones")
    g.add_argument("--model", choices=("auto", "omniglot", "miniimagenet"), default="auto",
                   help="network (auto: by image size)")
    g.add_argument("--filters", type=positive_int, default=None,
                   help="convolution filters per layer (paper: 64 OmniglotCNN, 32 MiniImageNetCNN)")
    g.add_argument("--norm", choices=("batch", "group", "none"), default="batch",
                   help="batch: batch statistics always, as the paper (default)")
    g.add_argument("--convention", choices=("pytorch", "tensorflow"), default="pytorch",
                   help="parameter and padding convention of the CNN: pytorch (default: PyTorch's initialization "
                        "and symmetric padding, what every shipped checkpoint and the demo use) or tensorflow (the "
                        "official code's Glorot-uniform weights, zero biases and 'SAME' padding, to match it exactly)")
    g.add_argument("--channels-last", action="store_true",
                   help="channels-last (NHWC) memory format for the convolutions; whether it is faster depends on "
                        "the network and --compile (measured ratios: docs/benchmarks.md)")


def report_main(argv: Sequence[str] | None = None) -> int:
    """``python -m reptile.fewshot report RUN [RUN ...]``: accuracy per run and over seeds."""
    p = argparse.ArgumentParser(prog="python -m reptile.fewshot",
                                description="Few-shot evaluation of trained runs (one per seed), as the paper's tables: "
                                            "each run's accuracy with a 95%% CI over tasks, and the mean +- sample "
                                            "standard deviation over runs.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="evaluate runs and summarize over seeds",
                       description="Evaluate the newest checkpoint of each run (one per seed) on unseen test "
                                   "tasks and print each run's accuracy and the mean +- std over runs.")
    r.add_argument("runs", nargs="+", help="run folders or checkpoint files (one per seed)")
    r.add_argument("--eval-tasks", type=positive_int, default=1000, help="test tasks per run (default 1000; paper 10000)")
    r.add_argument("--eval-seed", type=nonneg_int, default=12345)
    r.add_argument("--eval-split", choices=("test", "val", "train"), default=None,
                   help="split of the test tasks (default: the one the run was trained with, normally test)")
    r.add_argument("--eval-state", choices=("checkpoint", "fresh"), default="checkpoint")
    r.add_argument("--no-transductive", action="store_true", help="skip the transductive accuracy")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--no-progress", action="store_true", help="hide the progress bars (loading, evaluation)")
    r.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)  # the old opt-in; now the default
    add_threads_flag(r)
    args = parse_args(p, argv)
    from ..fewshot import report
    from ..fewshot.datasets import loading_progress
    from ..threads import apply_threads

    apply_threads(args.threads)
    progress = not args.no_progress
    try:
        with loading_progress(progress):
            res = report(args.runs, args.eval_tasks, args.eval_seed, not args.no_transductive, args.eval_split,
                         args.eval_state, progress)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"python -m reptile.fewshot: error: {flag_words(str(e), p)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res))
        return 0
    for row in res["runs"]:
        parts = [f"{row['run']} (iteration {row['iteration']}):"]
        for key in ("accuracy", "accuracy_transductive"):
            if key in row:
                parts.append(f"{key} {100 * row[key]:.2f} +- {100 * row[key + '_ci95']:.2f} % (95% CI, "
                             f"{args.eval_tasks} tasks)")
        print("  ".join(parts))
    for key, s in res["over_seeds"].items():
        std = "n/a (one run)" if math.isnan(s["std"]) else f"{100 * s['std']:.2f}"
        print(f"over {s['n']} run(s): {key} {100 * s['mean']:.2f} % +- {std} (sample std over seeds)")
    return 0
