"""The command line: help for every subcommand, a short run, eval, resume and clear errors."""
from __future__ import annotations

import re

import pytest

from reptile.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


def test_every_subcommand_documents_every_flag():
    for name, p in _subcommands().items():
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"reptile {name} {action.option_strings} has no help"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"]])
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: reptile" in capsys.readouterr().out


def test_train_eval_resume_roundtrip(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "sine", "--iterations", "6", "--checkpoint-every", "3", "--eval-tasks", "3", "--out", str(out),
            "--no-progress", "--hidden", "8,8"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"grid_mse_32_steps\s+\d", text)
    assert main(args) == 1  # refuses to overwrite
    assert "pass --resume" in capsys.readouterr().err
    assert main(args + ["--resume", "--threads", "1"]) == 0  # threads change speed, not the run
    assert main(["eval", str(out), "--eval-tasks", "3", "--json"]) == 0
    assert '"iteration": 6' in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    for argv in (["train", "sine", "--iterations", "-3"], ["train", "sine", "--inner-lr", "abc"],
                 ["train", "sine", "--algorithm", "mamal"], ["frobnicate"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


def test_failures_exit_1_without_traceback(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "Traceback" not in err
    assert main(["train", "sine", "--algorithm", "maml", "--inner-steps", "1", "--out", str(tmp_path / "m")]) == 1
    assert "--inner-steps >= 2" in capsys.readouterr().err  # the science says inner_steps; the CLI the flag
