"""Bad input at the command line (usage errors exit 2, failures exit 1): a clear error and nothing half-written (issue 9; split from the
former tests/test_bad_inputs.py, issue 16 item 6). Harness: tests/bad_input_harness.py."""
from __future__ import annotations

from bad_input_harness import *  # noqa: F401,F403  (fixtures ctx, sine_run, server and the helpers)


def test_cli_non_numeric_flag(ctx):
    ctx.cli(["train", "sine", "--iterations", "abc"], 2, "--iterations", "expected a whole number, got 'abc'")


def test_cli_negative_flag(ctx):
    ctx.cli(["train", "sine", "--inner-steps", "-3"], 2, "--inner-steps", "expected a number >= 1, got -3")


def test_cli_negative_family_flag(ctx):  # was a RuntimeError traceback from torch.linspace
    ctx.cli(["train", "sine", "--points", "-5"], 2, "--points", "expected a number >= 1, got -5")


def test_cli_alpha_not_positive(ctx):
    ctx.cli(["train", "sine", "--inner-lr", "0"], 2, "--inner-lr", "expected a positive finite number")
    ctx.cli(["train", "sine", "--test-lr", "-0.5"], 2, "--test-lr", "expected a positive finite number")  # ran before


def test_cli_weights_not_numbers(ctx):  # was "invalid <lambda> value"
    ctx.cli(["train", "sine", "--algorithm", "combination", "--weights", "1,x,1,1,1"], 2,
            "--weights", "'x' is not a number")


def test_cli_unknown_algorithm(ctx):
    ctx.cli(["train", "sine", "--algorithm", "mamal"], 2, "invalid choice: 'mamal'", "choose from")


def test_cli_unknown_family(ctx):
    ctx.cli(["train", "cifar"], 2, "invalid choice: 'cifar'")


def test_cli_unwritable_out_folder(ctx):  # was found only at the first checkpoint, after the work
    f = ctx.afile()
    ctx.cli(["train", "sine", "--iterations", "2", "--out", f / "run", *SINE], 1,
            f"{f} is a file, not a folder", "choose another --out")


def test_cli_out_folder_is_a_file(ctx):
    f = ctx.afile()
    ctx.cli(["train", "sine", "--iterations", "2", "--out", f, *SINE], 1, "is a file, not a folder")


def test_cli_export_demo_unwritable_out(ctx):
    f = ctx.afile()
    ctx.cli(["export-demo", _ckpt(ctx.sine_run), "--out", f / "sine.json"], 1, "is a file, not a folder")


def test_cli_glyphs_sheet_unwritable_out(ctx):  # was "[Errno 17] File exists", after building the glyph set
    f = ctx.afile()
    ctx.cli(["glyphs", "sheet", "--out", f / "sheet.png"], 1, "is a file, not a folder")


def test_cli_nan_loss(ctx):
    out = ctx.tmp / "diverged"
    err = ctx.cli(["train", "sine", "--inner-lr", "1e30", "--iterations", "5", "--out", out, *SINE], 1,
                  "non-finite loss", "no checkpoint was written", "Lower the learning rates")
    assert "iteration 1" in err and not out.exists()


def test_cli_full_disk_during_train(ctx):
    out = ctx.tmp / "run"
    args = ["train", "sine", "--iterations", "4", "--checkpoint-every", "2", "--log-every", "1", "--out", str(out),
            *SINE]

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with ctx.monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        ctx.cli(args, 1, "No space left on device", "cannot write", "ckpt-00000002.pt", unchanged=False)
    assert not list((out / "checkpoints").glob("*"))  # no checkpoint, no temporary
    assert main(args) == 0  # with space again the same command starts afresh ...
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(rows))  # ... and logs every row once


def test_cli_full_disk_during_export_demo(ctx):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    run = ctx.sine_run  # trained before the disk fills
    ctx.monkeypatch.setattr(os, "fsync", full)
    ctx.cli(["export-demo", _ckpt(run), "--out", ctx.tmp / "sine.json"], 1, "No space left on device",
            "sine.json")


def test_cli_unknown_device(ctx):  # was a RuntimeError traceback from torch.device
    ctx.cli(["train", "sine", "--device", "tpu", "--out", ctx.tmp / "run"], 1, "unknown device 'tpu'",
            "use cpu, cuda or cuda:N")


def test_cli_combination_weights_wrong_length(ctx):
    ctx.cli(["train", "sine", "--algorithm", "combination", "--weights", "1,1", "--out", ctx.tmp / "run"], 1,
            "needs --inner-steps = 5 weights", "got 2")


def test_cli_k_too_small(ctx):
    ctx.cli(["train", "sine", "--algorithm", "maml", "--inner-steps", "1", "--out", ctx.tmp / "run"], 1,
            "maml needs --inner-steps >= 2")
