"""Export a trained checkpoint to the in-browser demo's weights format (``reptile export-demo``).

The demo (``reptile/demo/``, served by ``reptile demo``) fine-tunes two networks in JavaScript:
a 3-way :class:`~reptile.models.OmniglotCNN` for the few-shot drawing panel (``kind="fewshot"``)
and a 1-...-1 :class:`~reptile.models.MLP` for the sine-wave panel (``kind="sine"``). It reads
them from a JSON file (format version 1; the reader is ``reptile/demo/weights.js``)::

    {"format": "reptile-lab-demo-weights", "version": 1, "kind": "fewshot" | "sine",
     "model": {"name": ..., "kwargs": {...}},          # reptile.models.model_spec
     "finetune": {...},                                 # how the page fine-tunes (see below)
     "params": {name: {"shape": [...], "dtype": "float32", "b64": "..."}},
     "init":   {same layout},                           # a random initialization, for comparison
     "source": {...}}                                   # provenance: checkpoint, iteration, config

Tensors are stored as base64 of little-endian float32, which is exact for float32 weights and
about half the size of decimal text. ``finetune`` for ``fewshot`` is the checkpoint's inner
optimizer (Adam with ``beta1 = 0`` in the paper) and learning rate with ``steps`` optimizer steps
on the three drawings; for ``sine`` it is full-batch SGD at the family's test step size (0.02)
with curves recorded after 0, 8, 16 and 32 steps. ``init`` is PyTorch's default initialization of
the same architecture drawn with ``torch.manual_seed(seed)`` (the training seed unless given):
for runs of ``reptile train`` that is the network meta-training started from.
"""
from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import atomic_write_bytes, resolve_checkpoint
from .models import build_model, seeded_init
from .types import Params

FORMAT = "reptile-lab-demo-weights"
VERSION = 1
KINDS = ("fewshot", "sine")
SINE_RECORD = (0, 8, 16, 32)
DEFAULT_FEWSHOT_STEPS = 5


def tensor_entry(t: torch.Tensor) -> dict[str, Any]:
    """``{"shape", "dtype": "float32", "b64"}`` of a tensor (rounded to float32, little-endian).

    Raises:
        ValueError: the tensor holds NaN or infinite values.
    """
    a = t.detach().to("cpu", torch.float32).contiguous().numpy()
    if not np.isfinite(a).all():
        raise ValueError("parameters contain NaN or infinite values; export a checkpoint from before the divergence")
    return {"shape": list(a.shape), "dtype": "float32", "b64": base64.b64encode(a.astype("<f4").tobytes()).decode("ascii")}


def decode_entry(entry: dict[str, Any]) -> torch.Tensor:
    """Inverse of :func:`tensor_entry` (also accepts ``"data"``: a list of numbers)."""
    shape = [int(d) for d in entry["shape"]]
    if "b64" in entry:
        a = np.frombuffer(base64.b64decode(entry["b64"]), dtype="<f4")
    else:
        a = np.asarray(entry["data"], dtype=np.float64)
    if a.size != math.prod(shape):
        raise ValueError(f"tensor of shape {shape} holds {a.size} values")
    return torch.from_numpy(a.copy()).reshape(shape)


def decode_params(entries: dict[str, dict[str, Any]], dtype: torch.dtype = torch.float64) -> Params:
    """A ``Params`` dict from the ``params`` or ``init`` map of a weights file."""
    return {k: decode_entry(v).to(dtype) for k, v in entries.items()}


def infer_kind(spec: dict[str, Any]) -> str:
    name = spec.get("name")
    if name == "omniglot":
        return "fewshot"
    if name == "mlp":
        return "sine"
    raise ValueError(f"the demo shows an Omniglot-style CNN (few-shot) or an MLP (sine waves); "
                     f"this checkpoint holds a {name!r} model")


def check_spec(kind: str, spec: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless the demo's JavaScript can run this model for ``kind``."""
    kw = spec.get("kwargs", {})
    if kind == "fewshot":
        if spec.get("name") != "omniglot":
            raise ValueError(f"`kind` fewshot needs an OmniglotCNN checkpoint, this one holds {spec.get('name')!r}")
        problems = []
        if kw.get("n_way") != 3:
            problems.append(f"n_way = {kw.get('n_way')} (the page has three classes: train with `ways` 3)")
        if kw.get("in_channels", 1) != 1:
            problems.append(f"in_channels = {kw.get('in_channels')} (drawings are greyscale)")
        if kw.get("image_size", 28) != 28:
            problems.append(f"image_size = {kw.get('image_size')} (drawings are 28x28)")
        if kw.get("norm", "batch") != "batch":
            problems.append(f"norm = {kw.get('norm')!r} (the page implements batch norm only)")
        if problems:
            raise ValueError("the demo cannot run this model: " + "; ".join(problems))
    elif kind == "sine":
        if spec.get("name") != "mlp":
            raise ValueError(f"`kind` sine needs an MLP checkpoint, this one holds {spec.get('name')!r}")
        sizes = list(kw.get("sizes", []))
        if len(sizes) < 2 or sizes[0] != 1 or sizes[-1] != 1:
            raise ValueError(f"the sine panel needs an MLP from 1 input to 1 output, got sizes {sizes}")
        if kw.get("activation") not in ("tanh", "relu"):
            raise ValueError(f"the page implements tanh and relu MLPs, got activation {kw.get('activation')!r}")
    else:
        raise ValueError(f"unknown demo kind {kind!r}; choose one of {KINDS}")


def random_init(spec: dict[str, Any], seed: int) -> Params:
    """PyTorch's default initialization of the model ``spec`` with ``torch.manual_seed(seed)``
    (the global RNG state is left as it was)."""
    model = seeded_init(seed, lambda: build_model(spec["name"], **spec.get("kwargs", {})))
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _plain(value: Any) -> Any:
    """JSON-safe copy of checkpoint metadata (tensors and paths become strings or lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 16 else f"tensor{list(value.shape)}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def export_demo(ckpt: dict[str, Any], kind: str | None = None, *, steps: int | None = None,
                init_seed: int | None = None, name: str = "") -> dict[str, Any]:
    """Build the demo weights object from a loaded checkpoint (see the module docstring).

    Args:
        ckpt: a checkpoint dict (``load_checkpoint``): ``params``, ``model_spec``, ``config``, ``extra``.
        kind: ``"fewshot"`` or ``"sine"``; inferred from the model when ``None``.
        steps: few-shot fine-tuning steps on the page (default 5, the blog's demo).
        init_seed: seed of the random initialization shown for comparison (default: the training seed).
        name: the checkpoint's name, recorded in ``source``.
    Raises:
        ValueError: a checkpoint without a model spec, a model the page cannot run, a kind that
            does not fit the model, parameters that do not fit the spec, non-finite values.
    """
    spec = ckpt.get("model_spec")
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError("the checkpoint has no model_spec; it was not written by `reptile train`")
    kind = kind or infer_kind(spec)
    check_spec(kind, spec)
    config = ckpt.get("config") or {}
    extra = ckpt.get("extra") or {}
    args = extra.get("args") or {}
    seed = int(config.get("seed", 0) if init_seed is None else init_seed)
    init = random_init(spec, seed)
    params = ckpt.get("params") or {}
    if set(params) != set(init) or any(tuple(params[k].shape) != tuple(init[k].shape) for k in init):
        raise ValueError(f"the checkpoint's parameters do not match its model spec {spec}")
    if kind == "fewshot":
        opt = config.get("inner_optimizer", "adam")
        if opt not in ("adam", "sgd"):
            raise ValueError(f"unknown inner optimizer {opt!r} in the checkpoint's config")
        steps = DEFAULT_FEWSHOT_STEPS if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"`steps` must be >= 1, got {steps}")
        finetune: dict[str, Any] = {"optimizer": opt, "lr": float(config.get("inner_lr", 1e-3)), "steps": steps}
        if opt == "adam":  # reptile.inner.Adam's defaults, used by `reptile train`
            finetune.update(beta1=0.0, beta2=0.999, eps=1e-8)
    else:
        lr = float(args.get("test_lr") or config.get("inner_lr", 0.02))
        finetune = {"optimizer": "sgd", "lr": lr, "record": list(SINE_RECORD)}
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model": {"name": spec["name"], "kwargs": _plain(spec.get("kwargs", {}))},
        "finetune": finetune,
        "params": {k: tensor_entry(params[k]) for k in init},
        "init": {k: tensor_entry(v) for k, v in init.items()},
        "source": {"checkpoint": name, "iteration": _plain(ckpt.get("iteration")),
                   "family": _plain(extra.get("family")), "config": _plain(config),
                   "args": _plain(args), "init": f"PyTorch default initialization, torch.manual_seed({seed})",
                   "torch_version": _plain(ckpt.get("torch_version")), "written_by": "reptile export-demo"},
    }


def write_demo_weights(obj: dict[str, Any], path: str | Path) -> Path:
    """Write a weights object as compact JSON, atomically."""
    data = (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode()
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)  # a static file to be served, not a private temporary one
    return Path(path)


def export_checkpoint(path: str | Path, out: str | Path | None = None, kind: str | None = None, *,
                      steps: int | None = None, init_seed: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Load a checkpoint (or a run folder's newest), export it and write ``out`` (default ``<kind>.json``).

    Returns ``(out_path, weights_object)``.
    """
    src, ckpt = resolve_checkpoint(path)
    obj = export_demo(ckpt, kind, steps=steps, init_seed=init_seed, name=src.name)
    out = Path(out) if out is not None else Path(f"{obj['kind']}.json")
    return write_demo_weights(obj, out), obj
