"""reptile-lab's engine: Reptile, FOMAML and MAML as pure functions on torch.func.

The public API (DESIGN.md): ``make_loss``, ``params_of``, ``meta_gradient`` and the vocabulary
``Params``, ``Batch``, ``LossFn``; models, task families, the inner loop and the trainer.

Every name is imported on first use (PEP 562), so ``import reptile`` (and ``reptile --help``)
does not load torch; ``reptile.meta_gradient``, ``from reptile import MetaTrainer``,
``reptile.tasks`` and any submodule ``reptile.X`` work as before.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_NAMES = {
    "ALGORITHMS": "algorithms", "meta_gradient": "algorithms", "meta_update": "algorithms",
    "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "evaluate_sine": "evaluate", "finetune": "evaluate",
    "SGD": "inner", "Adam": "inner", "Trajectory": "inner", "adapt": "inner",
    "make_loss": "losses", "params_of": "losses",
    "MLP": "models", "LinearModel": "models", "MiniImageNetCNN": "models", "OmniglotCNN": "models",
    "build_model": "models",
    "MetaTrainer": "train", "TrainConfig": "train", "TrainingDiverged": "train",
    "Batch": "types", "LossFn": "types", "Params": "types",
}

__all__ = ["ALGORITHMS", "Adam", "Batch", "LinearModel", "LossFn", "MLP", "MetaTrainer", "MiniImageNetCNN",
           "OmniglotCNN", "Params", "SGD", "TrainConfig", "Trajectory", "TrainingDiverged", "adapt", "build_model",
           "evaluate_sine", "finetune", "load_checkpoint", "make_loss", "meta_gradient", "meta_update", "params_of",
           "save_checkpoint", "tasks", "tree"]


def __getattr__(name: str) -> Any:
    """A public name (imported from its submodule on first use) or a submodule ``reptile.<name>``."""
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what static tools see; at run time the names come from __getattr__
    from . import tasks, tree
    from .algorithms import ALGORITHMS, meta_gradient, meta_update
    from .checkpoint import load_checkpoint, save_checkpoint
    from .evaluate import evaluate_sine, finetune
    from .inner import SGD, Adam, Trajectory, adapt
    from .losses import make_loss, params_of
    from .models import MLP, LinearModel, MiniImageNetCNN, OmniglotCNN, build_model
    from .train import MetaTrainer, TrainConfig, TrainingDiverged
    from .types import Batch, LossFn, Params
