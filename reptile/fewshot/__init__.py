"""Few-shot classification: the Reptile paper's N-way K-shot protocol on the toolkit.

Meta-training (paper section 6, official code ``train``): each task is an N-way episode with
``train_shots`` examples per class (10 on Omniglot in Table 3, more than the K shots of the test
tasks); the inner loop takes ``inner_steps`` minibatches of ``inner_batch`` of them, chosen by the
engine's schedules (``cycle`` exactly as the official ``_mini_batches``, ``replacement``,
``separate_tail``). :class:`EpisodeSampler` returns them stacked, ``(x[k, b, C, H, W], y[k, b])``,
for :class:`reptile.train.MetaTrainer`.

Evaluation (official code ``evaluate``), :func:`evaluate_fewshot`: for each test task draw N
classes with K training examples and one held-out example each; fine-tune from the meta-learned
initialization on the training examples only (``eval_inner_steps`` minibatches of
``eval_inner_batch``, the same inner optimizer: Adam with beta1 = 0); classify the held-out
examples; the parameters *and the Adam moments* are restored before the next task. With the
functional optimizer state that restoring is automatic: every task starts from the same state
(the one saved with the meta-trained checkpoint, as the official code's backup/restore of all
variables does, or a fresh one).

* non-transductive (the default): each test example is classified by a forward pass on all the
  training examples plus that one example, so batch-norm statistics come from the training
  examples and a single test example (the example's logits do not depend on the other test
  examples);
* transductive: the whole test set in one forward pass, batch-norm statistics shared across the
  test examples.

Accuracy is the fraction of held-out examples classified correctly, averaged over tasks, with a
95% confidence interval over tasks (``1.96 * std / sqrt(n_tasks)``, as MAML reports);
:func:`summarize_seeds` gives the mean and sample standard deviation over independently trained
seeds, as the Reptile paper reports its own rows (e.g. 95.39 +- 0.09 over 3 seeds).

Presets (:data:`PRESETS`) hold the hyper-parameters of the paper's appendix Tables 3-4
(Omniglot 5/20-way 1/5-shot, Mini-ImageNet 5-way 1/5-shot). They are dataset-independent: the
image size and channels come from the dataset (glyphs/Omniglot 28x28x1 -> ``OmniglotCNN``,
Mini-ImageNet 84x84x3 -> ``MiniImageNetCNN``). The tables are Reptile's; ``--algorithm fomaml``
or ``maml`` reuse the same values (the official code's first-order MAML runs share those flags;
MAML's own published settings use an SGD inner loop and differ).

The package: :mod:`~reptile.fewshot.presets` (the tables and published numbers),
:mod:`~reptile.fewshot.datasets` (splits by name, the CNN for a dataset),
:mod:`~reptile.fewshot.sampler` (meta-training tasks), :mod:`~reptile.fewshot.evaluation` (the
protocol), :mod:`~reptile.fewshot.family` (:class:`FewShotConfig` -> setup) and
:mod:`~reptile.fewshot.report` (accuracy over runs/seeds). Its command line lives in
:mod:`reptile.cli.fewshot`: ``reptile train fewshot ...`` (or ``reptile train --preset NAME ...``)
and ``python -m reptile.fewshot report RUN [RUN ...]``; see docs/fewshot.md.
"""
from __future__ import annotations

from .datasets import (BUILTIN_DATASETS, DATASET_LOADERS, Loader, build_fewshot_model, dataset_names, load_splits,
                       register_dataset)
from .evaluation import (EVAL_MODES, MODES, PREDICTORS, FewShotEvaluation, evaluate_fewshot, evaluate_task,
                         predict_non_transductive, predict_transductive, summarize_seeds)
from .family import FewShotConfig, _build, _checkpoint_state, build_fewshot
from .presets import DEFAULT_PRESET, PAPER_RESULTS, PRESETS, Preset, preset_defaults
from .report import report
from .sampler import EpisodeSampler, episode_batches, params_channels_last, to_channels_last

__all__ = [
    "Preset", "PRESETS", "PAPER_RESULTS", "DATASET_LOADERS", "register_dataset", "load_splits",
    "build_fewshot_model", "EpisodeSampler", "episode_batches", "predict_transductive",
    "predict_non_transductive", "FewShotEvaluation", "evaluate_task", "evaluate_fewshot",
    "summarize_seeds", "MODES", "EVAL_MODES", "FewShotConfig", "build_fewshot", "report",
]

