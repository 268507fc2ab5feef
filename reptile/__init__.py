"""reptile-lab's engine: Reptile, FOMAML and MAML as pure functions on torch.func.

The public API (DESIGN.md): ``make_loss``, ``params_of``, ``meta_gradient`` and the vocabulary
``Params``, ``Batch``, ``LossFn``; models, task families, the inner loop and the trainer.

Every name is imported on first use (PEP 562), so ``import reptile`` (and ``reptile --help``)
does not load torch; ``reptile.meta_gradient``, ``from reptile import MetaTrainer``,
``reptile.tasks`` and any submodule ``reptile.X`` work as before.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_getattr

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


#: a public name (imported from its submodule on first use) or a submodule ``<package>.<name>``
__getattr__ = lazy_getattr(__name__, _NAMES, globals())


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
