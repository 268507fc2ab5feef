"""Issue 18 item 8: no work wasted on an output that cannot be written, nothing half-written or stale."""
from __future__ import annotations

import errno
import zipfile

import pytest

from analysis import verify
from provider_package import provider_package
from reptile import train as train_module
from reptile.cli import main
from reptile.data.glyphs import build_glyphs

SINE = ["train", "sine", "--hidden", "4", "--eval-tasks", "1", "--no-progress"]


def test_a_checkpoints_entry_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").write_text("a file where the checkpoints folder goes")
    assert main([*SINE, "--iterations", "3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "checkpoints is a file, not a folder; training would fail at its first checkpoint" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no metrics.csv: nothing was trained


@pytest.fixture
def provider(tmp_path, monkeypatch):
    """A throwaway provider module that records that it ran, and one that is interrupted."""
    return provider_package(tmp_path, monkeypatch, "h18providers", {
        "records": """
            from analysis.claims import Claim
            def checks(mode, out_dir, progress):
                (out_dir / "ran.csv").write_text("a\\n1\\n")
                return [Claim("ran", 1.0, "1", True)]
        """,
        "interrupted": """
            def checks(mode, out_dir, progress):
                (out_dir / "new.csv").write_text("a\\n2\\n")
                raise KeyboardInterrupt
        """})


def test_verify_with_an_unusable_report_file_fails_before_its_checks(tmp_path, provider):
    out = tmp_path / "report"
    (out / "report.md").mkdir(parents=True)
    with pytest.raises(ValueError, match="report.md: a folder has that name"):
        verify.run_verify("quick", out, providers=[f"{provider}.records"])
    assert not (out / "ran.csv").exists(), "the checks ran before the report file was found unusable"


def test_an_interrupted_verify_leaves_no_stale_report_beside_new_data(tmp_path, provider):
    out = tmp_path / "report"
    verify.run_verify("quick", out, providers=[f"{provider}.records"])
    assert (out / "report.md").is_file()
    with pytest.raises(KeyboardInterrupt):
        verify.run_verify("quick", out, providers=[f"{provider}.interrupted"])
    assert (out / "new.csv").is_file()
    assert not (out / "report.md").exists() and not (out / "claims.csv").exists()


def test_a_full_disk_during_a_glyph_build_leaves_no_temporary_for_retries_to_add_to(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    small = dict(fonts="matplotlib", scripts=("Greek",), max_chars_per_script=8, min_chars_per_script=4,
                 n_instances=2)
    monkeypatch.setattr(zipfile.ZipFile, "writestr", full)
    for _ in range(3):
        with pytest.raises(OSError, match="No space left"):
            build_glyphs(seed=0, cache_dir=tmp_path, **small)
        assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_second_interrupt_during_the_save_is_not_called_a_written_checkpoint(tmp_path, capsys, monkeypatch):
    real_step, real_save = train_module.MetaTrainer.step, train_module.save_checkpoint

    def step(self):
        if self.iteration == 3:
            raise KeyboardInterrupt  # the first Ctrl-C, during iteration 4
        return real_step(self)

    def save(path, payload):
        if payload["iteration"] == 3:
            raise KeyboardInterrupt  # the second Ctrl-C, while the checkpoint of iteration 3 is written
        return real_save(path, payload)

    monkeypatch.setattr(train_module.MetaTrainer, "step", step)
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    out = tmp_path / "run"
    assert main([*SINE, "--iterations", "10", "--checkpoint-every", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted at iteration 3" in err
    assert "checkpoint written" not in err and "was NOT written" in err
