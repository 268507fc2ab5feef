"""The paper's few-shot hyper-parameters (appendix Tables 3-4) and published accuracies."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# ----------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """One column of the paper's appendix Table 3 (Omniglot) or Table 4 (Mini-ImageNet).

    ``iterations`` is the paper's outer-iteration count (100K or 200K): far beyond a CPU; pass
    ``--iterations`` to shorten a run (the outer step then anneals to 0 over the shorter run).
    """

    name: str
    table: str
    ways: int
    shots: int
    train_shots: int
    inner_lr: float
    inner_batch: int
    inner_steps: int
    outer_lr: float
    iterations: int
    meta_batch: int
    eval_inner_steps: int
    eval_inner_batch: int
    inner_optimizer: str = "adam"

    def defaults(self) -> dict[str, Any]:
        """The values as ``reptile train`` option names (``ways``, ``inner_lr``, ...)."""
        return {k: v for k, v in asdict(self).items() if k not in ("name", "table")}


def _omniglot(name: str, ways: int, shots: int) -> Preset:
    five = ways == 5
    return Preset(name, "Table 3 (Omniglot)", ways=ways, shots=shots, train_shots=10,
                  inner_lr=0.001 if five else 0.0005, inner_batch=10 if five else 20,
                  inner_steps=5 if five else 10, outer_lr=1.0, iterations=100_000 if five else 200_000,
                  meta_batch=5, eval_inner_steps=50, eval_inner_batch=5 if five else 10)


def _mini(name: str, shots: int) -> Preset:
    return Preset(name, "Table 4 (Mini-ImageNet)", ways=5, shots=shots, train_shots=15, inner_lr=0.001,
                  inner_batch=10, inner_steps=8, outer_lr=1.0, iterations=100_000, meta_batch=5,
                  eval_inner_steps=50, eval_inner_batch=5 if shots == 1 else 15)


#: the paper's hyper-parameter tables (appendix Tables 3-4), by preset name
PRESETS: dict[str, Preset] = {p.name: p for p in (
    _omniglot("omniglot-5w1s", 5, 1), _omniglot("omniglot-5w5s", 5, 5),
    _omniglot("omniglot-20w1s", 20, 1), _omniglot("omniglot-20w5s", 20, 5),
    _mini("miniimagenet-5w1s", 1), _mini("miniimagenet-5w5s", 5))}

#: published accuracies (%) per preset: Reptile's +- is a std over 3 seeds, MAML's (and FOMAML's,
#: both from Finn et al. 2017) a 95% CI over tasks; MAML/FOMAML rows are transductive.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "omniglot-5w1s": {"maml+transduction": 98.7, "fomaml+transduction": 98.3, "reptile": 95.39,
                      "reptile+transduction": 97.68},
    "omniglot-5w5s": {"maml+transduction": 99.9, "fomaml+transduction": 99.2, "reptile": 98.90,
                      "reptile+transduction": 99.48},
    "omniglot-20w1s": {"maml+transduction": 95.8, "fomaml+transduction": 89.4, "reptile": 88.14,
                       "reptile+transduction": 89.43},
    "omniglot-20w5s": {"maml+transduction": 98.9, "fomaml+transduction": 97.9, "reptile": 96.65,
                       "reptile+transduction": 97.12},
    "miniimagenet-5w1s": {"maml+transduction": 48.70, "fomaml+transduction": 48.07, "reptile": 47.07,
                          "reptile+transduction": 49.97},
    "miniimagenet-5w5s": {"maml+transduction": 63.11, "fomaml+transduction": 63.15, "reptile": 62.74,
                          "reptile+transduction": 65.99},
}

#: family defaults when no preset is given: Omniglot 5-way 1-shot (Table 3)
DEFAULT_PRESET = "omniglot-5w1s"


def preset_defaults(name: str | None = None) -> dict[str, Any]:
    """The values of preset ``name`` (``None``: :data:`DEFAULT_PRESET`, Omniglot 5-way 1-shot) as
    ``reptile train`` option names; ``ValueError`` for an unknown name."""
    name = name or DEFAULT_PRESET
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].defaults()
