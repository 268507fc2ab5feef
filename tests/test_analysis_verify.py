"""``reptile verify``: providers, the report folder, the CLI and atomic writes."""
from __future__ import annotations

import argparse

import pandas as pd
import pytest

from analysis import artifacts, cli, expectation_checks, taylor_checks, verify
from analysis.claims import Claim
from provider_package import provider_package


@pytest.fixture()
def providers(tmp_path, monkeypatch):
    """Three throwaway provider modules: one whose claims hold, one with a failing claim, one that crashes
    (registered for ``--only`` as a package's entry points would be)."""
    monkeypatch.setattr(verify, "OPTIONAL_PROVIDERS",
                        verify.OPTIONAL_PROVIDERS + [f"fakeproviders.{m}" for m in ("good", "bad", "crash")])
    return provider_package(tmp_path, monkeypatch, "fakeproviders", {
        "good": """
            from analysis.claims import Claim
            def checks(mode, out_dir, progress):
                (out_dir / "good.csv").write_text("a,b\\n1,2\\n")
                return [Claim("slope is two", 2.01, "2", True, f"mode {mode}"),
                        Claim("text measure", "k=2: 1.0", "1", True)]
        """,
        "bad": """
            from analysis.claims import Claim
            def checks(mode, out_dir, progress):
                return [Claim("coefficient matches", 1.7, "2 within 3 s.e.", False, "z = 4.1")]
        """,
        "crash": """
            def checks(mode, out_dir, progress):
                raise RuntimeError("boom in provider")
        """})


def test_run_verify_writes_report(tmp_path, providers):
    out = tmp_path / "rep"
    res = verify.run_verify("quick", out, providers=[f"{providers}.good"])
    assert res.ok and len(res.claims) == 2 and res.mode == "quick"
    report = (out / "report.md").read_text()
    assert "slope is two" in report and "all hold" in report and "good.csv" in report
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims.columns) == ["name", "measured", "unit", "prediction", "holds", "detail", "skipped"]
    assert claims.holds.all()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))   # no half-written files left


def test_failing_and_crashing_providers_fail_the_run(tmp_path, providers):
    res = verify.run_verify("default", tmp_path, providers=[f"{providers}.{m}" for m in ("good", "bad", "crash")])
    assert not res.ok
    names = [c.name for c in res.failed]
    assert names == ["coefficient matches", f"{providers}.crash ran"]
    assert "boom in provider" in res.failed[1].detail and "Traceback" in res.failed[1].detail
    missing = verify.run_verify("quick", tmp_path, providers=["analysis.no_such_module"])
    assert not missing.ok and "ModuleNotFoundError" in str(missing.failed[0].measured)
    with pytest.raises(ValueError, match="mode"):
        verify.run_verify("fast", tmp_path)
    with pytest.raises(ValueError, match="providers"):
        verify.run_verify("quick", tmp_path, providers=[])


def _parse(argv):
    parser = argparse.ArgumentParser(prog="reptile")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_exit_codes_and_table(tmp_path, providers, capsys):
    args = _parse(["verify", "--quick", "--out", str(tmp_path / "a"), "--no-progress", "--only", f"{providers}.good"])
    assert args.func is cli.run
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert "slope is two" in out and "holds" in out and "2.01" in out and "mode quick" in out
    args = _parse(["verify", "--out", str(tmp_path / "b"), "--no-progress",
                   "--only", f"{providers}.good", "--only", f"{providers}.bad"])
    assert cli.run(args) == 1
    captured = capsys.readouterr()
    assert "FAILS" in captured.out
    assert "FAILED: coefficient matches" in captured.err
    assert cli.main(["verify", "--full", "--out", str(tmp_path / "c"), "--no-progress", "--only", f"{providers}.crash"]) == 1
    assert "boom in provider" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["verify", "--quick", "--full"])                   # mutually exclusive
    defaults = _parse(["verify"])
    assert not defaults.quick and not defaults.full and str(defaults.out) == "reports/verify"


def test_cli_default_out_matches_verify():
    assert cli.DEFAULT_OUT == verify.DEFAULT_OUT


def test_default_provider_list_is_imported_functions():
    assert verify.PROVIDERS[:2] == [taylor_checks.checks, expectation_checks.checks]
    assert verify.provider_names()[:2] == ["analysis.taylor_checks", "analysis.expectation_checks"]
    assert verify.resolve_providers(["analysis.taylor_checks", "x.y"]) == [taylor_checks.checks, "x.y"]


def test_provider_functions_and_skipped_claims(tmp_path):
    def mine(mode, out_dir, progress):
        return [Claim("a", 1.0, "1", True), Claim.skip("needs a closed form", "no closed form here")]

    res = verify.run_verify("quick", tmp_path, providers=[mine])
    assert res.ok and [c.status for c in res.claims] == ["holds", "skipped"]
    assert "skipped" in verify.format_table(res.claims)
    assert "(1 skipped)" in (tmp_path / "report.md").read_text()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.csv"
    artifacts.write_text(target, "old\n")

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifacts.write_atomic(target, broken)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_claim_formatting():
    assert Claim("a", 0.000123456, "p", True).measured_text() == "0.0001235"
    assert Claim("a", "text", "p", False).measured_text() == "text"
    table = verify.format_table([Claim("a very long claim name " * 4, 1.0, "p", False)], width=20)
    assert "FAILS" in table and max(len(line) for line in table.splitlines()) < 80
    # units: appended, or a template around the number; the CSV row keeps the bare number
    se = Claim("z", 1.11234, "<= 3 s.e.", True, unit="s.e.")
    diff = Claim("d", 0.33341, "> 0", True, unit="Reptile - joint = {}")
    assert se.measured_text() == "1.112 s.e." and diff.measured_text() == "Reptile - joint = 0.3334"
    assert se.as_row()["measured"] == "1.11234" and float(diff.as_row()["measured"]) == 0.33341
    assert Claim.skip("s", "why").measured_text() == "skipped"


def test_real_providers_run_end_to_end_on_tiny_settings(tmp_path, monkeypatch):
    """Both real providers, shrunk so the test stays fast: they run, return claims, write files.
    (Whether the claims hold at these tiny sizes is not asserted; verify's modes test that.)"""
    monkeypatch.setitem(taylor_checks.CONFIG, "quick", dict(slope_tasks=1, n_alphas=3, break_tasks=1, break_points=4))
    monkeypatch.setattr(taylor_checks, "KS", (2, 3))
    monkeypatch.setitem(expectation_checks.CONFIG, "quick", dict(ls=[(2, 40)], ls_coef=[(2, 40)], sine_coef=[(2, 8)],
                                                                  sine_exch=8))
    res = verify.run_verify("quick", tmp_path, progress=False, providers=[taylor_checks.checks,
                                                                          expectation_checks.checks])
    assert not [c for c in res.claims if c.name.endswith(" ran")], [c.detail for c in res.claims]
    names = [c.name for c in res.claims]
    assert "HVP fwd-rev = dense Hessian" in names
    assert "E[g_MAML] = c1 AvgGrad + c2 alpha AvgGradInner (sine, k=2)" in names
    for f in ("taylor_sweep.csv", "taylor_slopes.csv", "taylor_breakdown.csv", "taylor_residuals.png",
              "coefficients.csv", "expectations.csv", "coefficients.png",
              "claims.csv", "report.md"):
        assert (tmp_path / f).stat().st_size > 0, f
    hvp_claims = [c for c in res.claims if c.name.startswith("HVP")]
    assert all(c.holds for c in hvp_claims)
    # the terminal table says what each number is (issue 15 item 6); claims.csv keeps numbers
    table = verify.format_table(res.claims, width=200)
    rows = {line.split("  ")[0]: line for line in table.splitlines()}
    assert "max abs error" in rows["HVP fwd-rev = dense Hessian"]
    assert "relative difference" in rows["HVP fwd-rev = rev-rev (sine MLP)"]
    assert " s.e." in rows["E[Hbar_2 gbar_1] = 1/2 grad E[gbar_1.gbar_2] (sine, k=2)"].split("difference <=")[0]
    assert "slope k=2:" in rows["leading-order residual ~ alpha^2 (MAML, sine)"]
    csv = pd.read_csv(tmp_path / "claims.csv").set_index("name")
    assert float(csv.loc["HVP fwd-rev = dense Hessian", "measured"]) < 1e-9
    assert csv.loc["HVP fwd-rev = dense Hessian", "unit"] == "max abs error {}"
    assert "1 thread;" in (tmp_path / "report.md").read_text()


def test_reptile_cli_discovers_verify():
    pytest.importorskip("reptile.cli")
    from reptile.cli import build_parser

    args = build_parser().parse_args(["verify", "--quick"])
    assert args.func is cli.run


def test_alignment_experiment_command(tmp_path, capsys):
    """``python -m analysis.cli alignment``: the long experiment's entry (formerly
    ``python -m analysis.alignment_checks``), tiny here; a wrong algorithm is one clear line."""
    out = tmp_path / "align"
    assert cli.main(["alignment", "--iterations", "2", "--every", "1", "--probe", "2", "--algorithms", "reptile,joint",
                     "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "within_cos" in text and "reptile  start" in text and (out / "alignment.csv").exists()
    assert cli.main(["alignment", "--algorithms", "reptile,adam", "--out", str(out)]) == 2
    assert "choose from reptile" in capsys.readouterr().err
