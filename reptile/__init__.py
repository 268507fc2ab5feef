"""reptile-lab's engine: Reptile, FOMAML and MAML as pure functions on torch.func.

The public API (DESIGN.md): ``make_loss``, ``params_of``, ``meta_gradient`` and the vocabulary
``Params``, ``Batch``, ``LossFn``; models, task families, the inner loop and the trainer.
"""
from . import tasks, tree
from .algorithms import ALGORITHMS, meta_gradient, meta_update
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluate import evaluate_sine, finetune
from .inner import SGD, Adam, Trajectory, adapt
from .losses import make_loss, params_of
from .models import MLP, LinearModel, MiniImageNetCNN, OmniglotCNN, build_model
from .train import MetaTrainer, TrainConfig, TrainingDiverged
from .types import Batch, LossFn, Params

__version__ = "0.1.0"

__all__ = ["ALGORITHMS", "Adam", "Batch", "LinearModel", "LossFn", "MLP", "MetaTrainer", "MiniImageNetCNN",
           "OmniglotCNN", "Params", "SGD", "TrainConfig", "Trajectory", "TrainingDiverged", "adapt", "build_model",
           "evaluate_sine", "finetune", "load_checkpoint", "make_loss", "meta_gradient", "meta_update", "params_of",
           "save_checkpoint", "tasks", "tree"]
