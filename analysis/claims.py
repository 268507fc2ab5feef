"""The unit of ``reptile verify``: a :class:`Claim` of the paper, what was measured, and whether it holds.

A check provider is a function ``checks(mode: str, out_dir: pathlib.Path, progress: bool)
-> list[Claim]`` (``mode`` one of :data:`MODES`; :data:`analysis.verify.PROVIDERS` lists them); it
may also write CSV and PNG files into ``out_dir`` (with :mod:`analysis.artifacts`, so a crash never
leaves a half-written file). A claim that does not apply (e.g. one that needs a closed form the
problem lacks) is returned as :meth:`Claim.skip`, with the reason: it neither holds nor fails.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MODES = ("quick", "default", "full")


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    Attributes:
        name: short, unique name of the claim (shown in the table and named on failure).
        measured: the measured figure: a number, or text when several numbers make it up.
        prediction: what the paper (or the derivation) predicts, as text.
        holds: whether the measurement agrees with the prediction by the stated criterion.
        detail: the criterion, tolerances and anything needed to reproduce the figure.
        skipped: non-empty when the claim was not checked: the reason (``holds`` is then True,
            so a skip never fails a run; :attr:`status` is ``"skipped"``).
        unit: what a numeric ``measured`` is, for the tables: a unit appended after the number
            (``"s.e."`` -> ``"1.112 s.e."``) or a template with ``{}`` for the number
            (``"Reptile - joint = {}"``). ``claims.csv`` keeps the bare number in ``measured`` and
            this text in its own column.
    """

    name: str
    measured: float | str
    prediction: str
    holds: bool
    detail: str = ""
    skipped: str = ""
    unit: str = ""

    @classmethod
    def skip(cls, name: str, reason: str) -> "Claim":
        """A claim that does not apply, with the reason (printed in the table and the report)."""
        return cls(name, "skipped", "-", True, reason, reason)

    @property
    def status(self) -> str:
        """``"holds"``, ``"FAILS"`` or ``"skipped"``."""
        return "skipped" if self.skipped else "holds" if self.holds else "FAILS"

    def number_text(self, digits: int = 4) -> str:
        """``measured`` alone: numbers with ``digits`` significant digits, text as it is."""
        m = self.measured
        if isinstance(m, bool) or not isinstance(m, (int, float)):
            return str(m)
        if math.isnan(m) or math.isinf(m):
            return str(m)
        return f"{m:.{digits}g}"

    def measured_text(self, digits: int = 4) -> str:
        """``measured`` formatted for a table, with its :attr:`unit` (``"1.112 s.e."``,
        ``"Reptile - joint = 0.3334"``)."""
        text = self.number_text(digits)
        if not self.unit or self.skipped:
            return text
        return self.unit.replace("{}", text) if "{}" in self.unit else f"{text} {self.unit}"

    def as_row(self) -> dict:
        """One row of ``claims.csv``: ``measured`` stays a bare number (8 significant digits), the
        unit has its own column."""
        row = asdict(self)
        row["measured"] = self.number_text(8)
        return row


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown verify mode {mode!r}; choose one of {MODES}")
    return mode
