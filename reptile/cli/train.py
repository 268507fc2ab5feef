"""``reptile train FAMILY`` and ``reptile eval RUN``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import choices
from ..paths import check_output_dir
from ..threads import apply_threads
from . import fewshot, least_squares, sine
from .argtypes import add_threads_flag, nonneg_int, number_list, positive_float, positive_int

if TYPE_CHECKING:  # the science (and torch) is imported when a command runs, not to build the parser
    from .. import distributed
    from ..train import TrainConfig

#: each task family's flags (one module per family), in help order
FAMILY_FLAGS = {"sine": sine.add_arguments, "least-squares": least_squares.add_arguments,
                "fewshot": fewshot.add_arguments}

SHARED = ("inner_steps", "inner_batch", "inner_lr", "inner_optimizer", "outer_lr", "iterations", "meta_batch")


def add_training_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("meta-training (defaults depend on the family or preset)")
    g.add_argument("--algorithm", choices=choices.ALGORITHMS, default="reptile",
                   help="reptile (default), fomaml, maml (second order), combination (with --weights), "
                        "joint (joint training baseline)")
    g.add_argument("--inner-steps", type=positive_int, help="k: inner-loop steps per task")
    g.add_argument("--inner-batch", type=positive_int, help="examples per inner minibatch")
    g.add_argument("--inner-lr", type=positive_float, help="inner step size alpha")
    g.add_argument("--inner-optimizer", choices=("sgd", "adam"), help="inner optimizer (adam uses beta1 = 0)")
    g.add_argument("--reset-inner-state", action="store_true",
                   help="reset Adam moments for every task (the paper keeps them across tasks)")
    g.add_argument("--schedule", choices=choices.SCHEDULES, default="cycle",
                   help="minibatch schedule: cycle (official code; default), replacement, separate_tail "
                        "(last minibatch from --tail reserved examples), shared_tail (a synonym of cycle)")
    g.add_argument("--weights", type=number_list,
                   help="w_1,...,w_k for --algorithm combination, e.g. 1,1,0,0")
    g.add_argument("--outer-lr", type=positive_float, help="outer step size eps (annealed linearly to 0)")
    g.add_argument("--no-anneal", action="store_true", help="keep the outer step size constant")
    g.add_argument("--outer-optimizer", choices=("interpolate", "sgd", "adam"), default="interpolate",
                   help="interpolate: phi <- phi + eps (phi~ - phi) (paper); or hand the update to torch SGD/Adam")
    g.add_argument("--meta-batch", type=positive_int, help="tasks per outer iteration")
    g.add_argument("--batching", choices=("loop", "vmap"), default="loop",
                   help="compute the meta-batch's tasks in a Python loop or with torch.func.vmap")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the inner step (MAML: the whole update) even where the default ('auto': "
                        "compile convolutional models of the paper's size, first-order algorithms) would not; the "
                        "first iteration compiles (20-60 s on a small CPU for a few-shot CNN, minutes for MAML); same numbers up to rounding; "
                        "REPTILE_NO_COMPILE=1 turns compilation off")
    g.add_argument("--iterations", type=positive_int, help="outer iterations")
    g.add_argument("--seed", type=nonneg_int, default=0, help="seed of the initialization and of every task (default 0)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="parameter dtype (default float32)")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    add_threads_flag(g)


def add_output_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=None,
                   help="run folder for checkpoints/ and metrics.csv (default runs/<family>-<algorithm>-seed<seed>)")
    g.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --out")
    g.add_argument("--checkpoint-every", type=positive_int, default=1000, help="iterations between checkpoints (default 1000)")
    g.add_argument("--log-every", type=positive_int, default=100, help="iterations between metric rows (default 100)")
    g.add_argument("--eval-tasks", type=positive_int, default=100, help="unseen tasks for the before/after evaluation (default 100)")
    g.add_argument("--eval-seed", type=nonneg_int, default=12345, help="seed of the evaluation tasks (default 12345)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="meta-train on a task family",
                       description="Meta-train an initialization with Reptile, FOMAML, MAML, a gradient "
                                   "combination or joint training; prints the test loss before and after.")
    p.add_argument("family", nargs="?", choices=sorted(FAMILY_FLAGS), default=None,
                   help="task family (sine: the blog's setting by default)")
    for add_arguments in FAMILY_FLAGS.values():
        add_arguments(p)
    p.add_argument("--shots", type=positive_int, default=None,
                   help="sine: points given at test time (default 10); fewshot: K, training examples per class "
                        "of a test task (default: the preset's)")
    add_training_flags(p)
    add_output_flags(p)
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="evaluate a trained run or checkpoint on unseen tasks",
                       description="Load a run folder (newest good checkpoint) or a checkpoint file and evaluate "
                                   "its initialization on unseen tasks of the family it was trained on.")
    e.add_argument("run", type=Path, help="run folder or checkpoint file")
    e.add_argument("--eval-tasks", type=positive_int, default=100, help="unseen tasks (default 100)")
    e.add_argument("--eval-seed", type=nonneg_int, default=12345, help="seed of the evaluation tasks (default 12345)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bars (loading, evaluation)")
    add_threads_flag(e)
    e.set_defaults(func=run_eval)


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags (``None``) from the family's defaults, for the few-shot family from
    ``--preset`` (default Omniglot 5-way 1-shot); flags typed explicitly are kept."""
    from ..families import get_family
    from ..fewshot import preset_defaults

    if args.family is None:
        args.family = "fewshot" if getattr(args, "preset", None) else "sine"
    defaults = dict(get_family(args.family).defaults)
    if args.family == "fewshot":
        defaults.update(preset_defaults(getattr(args, "preset", None)))
    for k in SHARED:
        if getattr(args, k, None) is None:
            setattr(args, k, defaults[k])
    for k, v in defaults.items():
        if k not in SHARED and getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def config_from(args: argparse.Namespace) -> "TrainConfig":
    from ..train import TrainConfig

    return TrainConfig(algorithm=args.algorithm, inner_steps=args.inner_steps, inner_batch=args.inner_batch,
                       inner_optimizer=args.inner_optimizer, inner_lr=args.inner_lr,
                       reset_inner_state=args.reset_inner_state, outer_lr=args.outer_lr, anneal=not args.no_anneal,
                       outer_optimizer=args.outer_optimizer, meta_batch=args.meta_batch, batching=args.batching,
                       iterations=args.iterations, seed=args.seed, weights=args.weights,
                       checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                       compile=True if getattr(args, "compile", False) else "auto",
                       channels_last=True if getattr(args, "channels_last", False) else "auto")


def _saved_args(args: argparse.Namespace) -> dict:
    skip = {"func", "out", "resume", "no_progress", "eval_tasks", "eval_seed", "command"}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            if k not in skip and not k.startswith("_")}


def _resume_settings(args: argparse.Namespace, out: Path) -> argparse.Namespace:
    """With --resume: the run's settings read back from its checkpoint, with the flags typed now on top."""
    from ..runfolder import check_resume_settings, find_resume_checkpoint, settings_from_checkpoint

    found = find_resume_checkpoint(out)
    if found is None:
        return args
    given = {k: getattr(args, k) for k in getattr(args, "_given", set(vars(args))) if not k.startswith("_")}
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in given.items()}
    r = check_resume_settings(settings_from_checkpoint(found[1]), given, reached=int(found[1]["iteration"]))
    for k, v in r.settings.items():
        setattr(args, k, v)
    for note in r.notes:
        print(f"note: {note}", file=sys.stderr)
    return args


def run_train(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..limits import check_device, check_seed, check_training_sizes
    from ..runfolder import check_run_folder

    apply_threads(args.threads)
    check_device(args.device)
    check_seed(args.seed)
    if args.resume:
        fam = args.family or ("fewshot" if getattr(args, "preset", None) else "sine")
        args.out = check_run_folder(args.out or Path("runs") / f"{fam}-{args.algorithm}-seed{args.seed}")
        args = _resume_settings(args, args.out)
    args = resolve(args)
    check_training_sizes(args)
    cfg = config_from(args)
    # -- distributed (torchrun with WORLD_SIZE > 1): split each meta-batch's tasks across ranks ----------
    distributed.check_config(cfg, distributed.world_size_from_env())
    with distributed.process_group(args.device) as ctx:
        if ctx is not None and ctx.backend == "nccl":
            args.device = f"cuda:{ctx.local_rank}"
        return _run_train(args, cfg, ctx)


def _run_train(args: argparse.Namespace, cfg: "TrainConfig", ctx: "distributed.DistContext | None") -> int:
    from .. import distributed
    from ..families import build_saved
    from ..fewshot.datasets import loading_progress
    from ..runfolder import check_fresh_start, check_run_folder
    from ..setups import EvalOptions
    from ..train import MetaTrainer

    writer = ctx is None or ctx.is_writer
    progress = writer and not args.no_progress
    out = check_output_dir(args.out or Path("runs") / f"{args.family}-{args.algorithm}-seed{args.seed}")
    if writer:  # before any work: another tool's folder, unusable checkpoints/, start over a run
        check_run_folder(out)
        if not args.resume:
            check_fresh_start(out)
    with loading_progress(progress):
        setup = build_saved(args.family, vars(args))
    trainer = MetaTrainer(setup.loss_fn, setup.phi, setup.sampler, cfg, out, model_spec=setup.spec,
                          extra={"family": args.family, "args": _saved_args(args)},
                          **distributed.trainer_kwargs(ctx, cfg.meta_batch))
    trainer.open_run_folder()  # one writer per run folder, held until training ends
    try:
        if args.resume and trainer.resume() and writer:
            print(f"resumed {out} at iteration {trainer.iteration}/{cfg.iterations}", file=sys.stderr)
        if not writer:  # other ranks only compute their tasks; rank 0 evaluates, prints and writes
            trainer.run(progress=False)
            return 0
        before = setup.evaluate(setup.phi, EvalOptions(args.eval_tasks, args.eval_seed, progress=progress))
    except BaseException:
        trainer.close()
        raise
    if progress and trainer.fast_path.compile and trainer.iteration < cfg.iterations:
        print(f"training path: {trainer.fast_path.describe()}; the first iteration compiles it (20-60 s "
              f"on a small CPU, once per shape, then cached on disk; REPTILE_NO_COMPILE=1 runs eagerly, with the same numbers)", file=sys.stderr)
    try:
        trainer.run(progress=progress)
    except KeyboardInterrupt:
        if trainer.saved_iteration == trainer.iteration:  # a second Ctrl-C can stop the checkpoint being written
            where = f"checkpoint written to {out / 'checkpoints'}"
        else:
            where = (f"its checkpoint was NOT written (interrupted again while saving); the newest checkpoint in "
                     f"{out / 'checkpoints'} is used")
        print(f"interrupted at iteration {trainer.iteration}; {where}; continue with --resume", file=sys.stderr)
        raise
    after = setup.evaluate(trainer.phi, EvalOptions(args.eval_tasks, args.eval_seed, inner_state=trainer.inner_state,
                                                    progress=progress))
    print(f"{args.family} / {args.algorithm}: {cfg.iterations} iterations, run folder {out}")
    print(f"{'metric':<36}{'before':>14}{'after':>14}")
    for k in before:
        if k.endswith("_ci95") or k.startswith("eval_"):  # intervals go beside their metric; eval_* are settings
            continue
        b, a = (f"{m[k]:.4g}" + (f" ±{m[k + '_ci95']:.2g}" if f"{k}_ci95" in m else "") for m in (before, after))
        print(f"{k:<36}{b:>14}{a:>14}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..families import build_saved
    from ..fewshot.datasets import loading_progress
    from ..setups import EvalOptions, restore

    apply_threads(args.threads)
    progress = not args.no_progress
    with loading_progress(progress):
        r = restore(args.run, build_saved)
    metrics = r.setup.evaluate(r.phi, EvalOptions(args.eval_tasks, args.eval_seed, inner_state=r.inner_state,
                                                  progress=progress))
    if args.json:
        print(json.dumps({"checkpoint": str(r.path), "iteration": r.iteration, **metrics}))
    else:
        print(f"{r.path} (iteration {r.iteration})")
        for k, v in metrics.items():
            print(f"{k:<40}{v:.5g}")
    return 0
