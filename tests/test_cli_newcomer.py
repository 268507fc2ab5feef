"""What a new user meets first (issue #15): one --threads policy on every command, a parser that
needs no torch, progress during the long waits, and error/help wording that names the flags."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reptile
from reptile import choices, threads
from reptile.cli import build_parser, main
from reptile.cli.fewshot import report_main
from reptile.cli.parsing import flag_words, parameter_flags
from reptile.data import ImageClassDataset

ROOT = Path(__file__).resolve().parents[1]


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=ROOT)


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command words, parser)`` of every runnable subcommand (``("glyphs", "build")``, ...)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaf_parsers(sub, path + (name,))


def _report_help() -> str:
    """``python -m reptile.fewshot report --help`` (its parser is built inside report_main)."""
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit):
        report_main(["report", "--help"])
    return buf.getvalue()


# ----------------------------------------------------------------------------- no torch for help
def test_building_the_parser_imports_no_torch():
    r = _run_python("import sys; import reptile.cli; reptile.cli.build_parser(); "
                    "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["verify", "--help"]])
def test_help_imports_no_torch(argv):
    r = _run_python("import sys\nfrom reptile.cli import main\n"
                    f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
                    "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert "usage: reptile" in r.stdout


def test_public_names_still_resolve():
    for name in reptile.__all__:
        assert getattr(reptile, name) is not None, name
    assert reptile.meta_gradient is reptile.algorithms.meta_gradient
    assert reptile.tasks.SCHEDULES == reptile.tasks.schedules.SCHEDULES
    from reptile import MetaTrainer, Params  # noqa: F401
    assert reptile.setups.restore is not None  # any submodule as an attribute, as before
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        reptile.no_such_name  # noqa: B018
    r = _run_python("import sys, reptile; assert 'torch' not in sys.modules; "
                    "reptile.meta_gradient; assert 'torch' in sys.modules; print('ok')")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_torch_free_choices_equal_the_registries():
    from reptile.algorithms import ALGORITHMS
    from reptile.fewshot import BUILTIN_DATASETS, PRESETS
    from reptile.tasks.schedules import SCHEDULES

    assert choices.ALGORITHMS == ALGORITHMS.names
    assert choices.SCHEDULES == SCHEDULES
    assert choices.PRESETS == tuple(sorted(PRESETS))
    assert choices.DATASETS == BUILTIN_DATASETS
    from reptile.data import DATASETS
    assert set(choices.DATASETS) == set(DATASETS)
    import analysis.cli
    import analysis.verify
    assert analysis.cli.DEFAULT_OUT == analysis.verify.DEFAULT_OUT  # copied so that register needs no torch


def test_registered_datasets_are_offered(tmp_path):
    from reptile import fewshot
    fewshot.register_dataset("tiny-choice", lambda d, s, r: {})
    try:
        p = build_parser()
        train = p._subparsers._group_actions[0].choices["train"]
        dataset = next(a for a in train._actions if a.dest == "dataset")
        assert "tiny-choice" in dataset.choices and set(choices.DATASETS) <= set(dataset.choices)
    finally:
        fewshot.DATASET_LOADERS.pop("tiny-choice", None)
        fewshot.load_splits.cache_clear()


# ----------------------------------------------------------------------------------- --threads
STATED = "(default 1, or $OMP_NUM_THREADS when set"  # the default, as every --help states it

def test_every_subcommand_has_the_threads_flag_with_its_default_stated():
    leaves = dict(_leaf_parsers(build_parser()))
    assert {("train",), ("eval",), ("demo",), ("export-demo",), ("glyphs", "build"), ("glyphs", "sheet"),
            ("verify",)} <= set(leaves)
    for words, p in leaves.items():
        flags = {o for a in p._actions for o in a.option_strings}
        assert "--threads" in flags, words
        assert STATED in " ".join(p.format_help().split()), words
    report_help = " ".join(_report_help().split())
    assert "--threads N" in report_help and STATED in report_help


def test_threads_flag_parses_on_every_subcommand():
    p = build_parser()
    positional = {("eval",): ["run"], ("export-demo",): ["ckpt"], ("glyphs", "sheet"): ["--out", "x.png"]}
    for words, _ in _leaf_parsers(p):
        args = p.parse_args([*words, *positional.get(words, []), "--threads", "1"])
        assert args.threads == 1, words


@pytest.mark.parametrize("value,wording", [
    ("0", "argument --threads: expected a number >= 1, got 0"),
    ("100000", f"100000 threads is more than the {threads.available_cpus()} CPUs available to this process; "
               f"choose 1..{threads.available_cpus()}"),
    ("two", "argument --threads: expected a whole number, got 'two'"),
])
@pytest.mark.parametrize("command", [["eval", "run"], ["train", "sine"], ["verify"]])
def test_bad_thread_counts_are_refused_by_the_subcommand(command, value, wording, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--threads", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert wording in err
    assert f"usage: reptile {command[0]}" in err  # the subcommand's usage, not the top-level one


def test_a_wrong_flag_shows_the_subcommands_usage(capsys):
    for argv, usage in ((["eval", "run", "--no-such-flag"], "usage: reptile eval"),
                        (["glyphs", "build", "--no-such-flag"], "usage: reptile glyphs build"),
                        (["train", "sine", "--no-such-flag", "3"], "usage: reptile train")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(usage), err
        assert "unrecognized arguments: --no-such-flag" in err


def test_apply_threads_policy(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(min(2, threads.available_cpus()))
        assert threads.apply_threads(None) == threads.DEFAULT_THREADS == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert threads.apply_threads(None) == 1  # the user's OMP_NUM_THREADS (through torch) is kept
        assert threads.apply_threads(threads.available_cpus()) == threads.available_cpus()
        for bad in (0, -1, threads.available_cpus() + 1, 1.5, True):
            with pytest.raises(ValueError, match="threads"):
                threads.apply_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_train_applies_threads(tmp_path):
    before = torch.get_num_threads()
    try:
        rc = main(["train", "sine", "--iterations", "1", "--hidden", "4", "--eval-tasks", "1", "--no-progress",
                   "--threads", "1", "--out", str(tmp_path / "r")])
        assert rc == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- words
def test_science_parameter_names_become_flags():
    p = build_parser()
    flags = parameter_flags(p)
    assert flags["data_dir"] == "--data-dir" and flags["train_shots"] == "--train-shots"
    assert "seed" not in flags and "dataset" not in flags  # plain words stay words
    msg = "dataset 'omniglot' is read from a folder you provide: pass data_dir (see docs/data.md)"
    assert flag_words(msg, p) == ("dataset 'omniglot' is read from a folder you provide: pass --data-dir "
                                  "(see docs/data.md)")
    for untouched in ("/tmp/data_dir/x", "my_data_dir", "data_dir.txt", "--data-dir", "eval_inner_steps_x"):
        assert flag_words(untouched, p) == untouched
    assert flag_words("set eval_inner_steps.", p) == "set --eval-inner-steps."
    # a name in backticks is a parameter, even when it is also a word; unknown names keep their quotes
    assert flag_words("fewer classes than `ways` 20; raise `train_shots`", p) == \
        "fewer classes than --ways 20; raise --train-shots"
    assert flag_words("see `no_such_parameter`", p) == "see `no_such_parameter`"


def test_omniglot_without_a_folder_names_the_flag(tmp_path, capsys):
    rc = main(["train", "fewshot", "--dataset", "omniglot", "--iterations", "1", "--no-progress",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 1 and "pass --data-dir" in err and "pass data_dir" not in err, err


def test_schedule_help_lists_every_schedule():
    train = dict(_leaf_parsers(build_parser()))[("train",)]
    action = next(a for a in train._actions if a.dest == "schedule")
    for name in choices.SCHEDULES:
        assert name in action.help, name


def test_glyph_commands_are_described():
    leaves = dict(_leaf_parsers(build_parser()))
    for words in (("glyphs", "build"), ("glyphs", "sheet")):
        assert leaves[words].description and len(leaves[words].description) > 40, words


def test_docs_do_not_call_channels_last_slower():
    row = next(line for line in (ROOT / "docs" / "fewshot.md").read_text().splitlines()
               if line.startswith("| `--channels-last`"))
    assert "slower" not in row and "docs/benchmarks.md" in row


# ---------------------------------------------------------------------------------- progress
def _tiny(n_classes: int, seed: int) -> ImageClassDataset:
    rng = np.random.default_rng(seed)
    images = [(rng.random((8, 28, 28)) > 0.5).astype(np.float32) for _ in range(n_classes)]
    return ImageClassDataset(images, [f"g/c{c}" for c in range(n_classes)], ["g"] * n_classes)


@pytest.fixture
def tiny_progress():
    from reptile import fewshot
    fewshot.register_dataset("tiny-progress", lambda d, s, r: {"train": _tiny(6, 1), "val": _tiny(5, 2),
                                                                "test": _tiny(5, 3)})
    yield "tiny-progress"
    fewshot.DATASET_LOADERS.pop("tiny-progress", None)
    fewshot.load_splits.cache_clear()


def test_loading_is_silent_unless_asked(tiny_progress, capsys):
    from reptile.fewshot import load_splits
    from reptile.fewshot.datasets import loading_progress

    load_splits(tiny_progress)
    assert capsys.readouterr().err == ""
    load_splits.cache_clear()
    with loading_progress():
        load_splits(tiny_progress)
    assert "loaded tiny-progress in" in capsys.readouterr().err


def test_fewshot_training_shows_loading_and_evaluation_progress(tiny_progress, tmp_path, capsys):
    common = ["--dataset", tiny_progress, "--ways", "3", "--train-shots", "4", "--inner-steps", "2",
              "--inner-batch", "4", "--meta-batch", "1", "--filters", "2", "--eval-tasks", "2",
              "--eval-inner-steps", "1"]
    assert main(["train", "fewshot", *common, "--iterations", "1", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert f"loaded {tiny_progress} in" in err and "evaluating" in err  # before and after training
    from reptile.fewshot import load_splits
    load_splits.cache_clear()  # as in a new process (within one, the splits are cached and load at once)
    assert main(["eval", str(tmp_path / "a"), "--eval-tasks", "2"]) == 0
    err = capsys.readouterr().err
    assert f"loaded {tiny_progress} in" in err and "evaluating" in err
    assert main(["train", "fewshot", *common, "--iterations", "1", "--no-progress",
                 "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().err == ""
