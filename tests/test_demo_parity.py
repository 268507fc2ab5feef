"""The in-browser demo's JavaScript against torch: forward pass, gradients and fine-tuning.

The weights go through ``reptile.demo_export`` (float32, base64) and are decoded back for the
torch side, so both sides start from identical numbers. torch runs the reference in float64 with
reptile's own models, losses and functional optimizers (``reptile.inner.Adam``/``SGD``/``adapt``);
the JavaScript (also float64) runs under node. Everything must agree to 1e-4.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from reptile.demo_export import decode_params, export_demo
from reptile.inner import SGD, Adam, adapt
from reptile.losses import make_loss
from reptile.models import MLP, OmniglotCNN, model_spec

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")
TOL = 1e-4

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run the demo's JavaScript)")


def run_node(spec: dict, tmp_path: Path) -> dict:
    inp, out = tmp_path / "in.json", tmp_path / "out.json"
    inp.write_text(json.dumps(spec))
    proc = subprocess.run([NODE, str(ROOT / "tests/js/parity.mjs"), str(inp), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"node failed:\n{proc.stderr}"
    return json.loads(out.read_text())


def maxdiff(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64).reshape(torch.as_tensor(a).shape)
    return float((a - b).abs().max())


def fewshot_checkpoint(filters: int = 24) -> dict:
    torch.manual_seed(3)
    model = OmniglotCNN(n_way=3, filters=filters)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(4)
    for k in params:  # batch-norm gamma/beta away from 1/0, so their gradients matter
        if k.endswith(".1.weight"):
            params[k] = 1 + 0.3 * torch.randn(params[k].shape, generator=g)
        elif k.endswith(".1.bias"):
            params[k] = 0.2 * torch.randn(params[k].shape, generator=g)
    return {"params": params, "model_spec": model_spec(model), "iteration": 1,
            "config": {"inner_optimizer": "adam", "inner_lr": 1e-3, "seed": 11}, "extra": {}}


def sine_checkpoint() -> dict:
    torch.manual_seed(5)
    model = MLP((1, 64, 64, 1), "tanh")
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    return {"params": params, "model_spec": model_spec(model), "iteration": 1,
            "config": {"inner_optimizer": "sgd", "inner_lr": 0.02, "seed": 12}, "extra": {"args": {"test_lr": 0.02}}}


def drawings(n: int = 4) -> torch.Tensor:
    """Drawing-like images: mostly background 1 with dark strokes, plus grey anti-aliasing."""
    g = torch.Generator().manual_seed(6)
    img = torch.ones(n, 1, 28, 28, dtype=torch.float64)
    for i in range(n):
        for _ in range(3):
            r, c = torch.randint(4, 24, (2,), generator=g).tolist()
            img[i, 0, r - 1:r + 2, max(0, c - 8):c + 8] = 0.0
            img[i, 0, max(0, r - 6):r + 6, c] = torch.rand(min(r + 6, 28) - max(0, r - 6), generator=g, dtype=torch.float64)
    return img


def fewshot_reference(model, params, train, query, ft):
    loss_fn = make_loss(model, "cross_entropy")
    y = torch.arange(train.shape[0])
    steps = ft["steps"]
    opt = Adam(ft["lr"], beta1=ft["beta1"], beta2=ft["beta2"], eps=ft["eps"]) if ft["optimizer"] == "adam" else SGD(ft["lr"])
    both = torch.cat([train, query[None]])

    def query_probs(p):
        return torch.softmax(functional_call(model, p, (both,)), -1)[-1]

    traj = adapt(loss_fn, params, (train.expand(steps, *train.shape), y.expand(steps, *y.shape)), opt)
    return {"probs": query_probs(traj.end), "before": query_probs(params), "losses": traj.losses}


FEWSHOT_CONFIGS = [
    {},  # the exported one: Adam beta1 = 0, lr 1e-3, 5 steps
    {"lr": 0.01, "steps": 10},
    {"optimizer": "sgd", "lr": 0.1, "steps": 7},
]


@pytest.fixture(scope="module")
def fewshot_case(tmp_path_factory):
    ckpt = fewshot_checkpoint()
    weights = export_demo(ckpt, "fewshot")
    images = drawings()
    train, query = images[:3], images[3]
    spec = {"fewshot": {"weights": weights, "train": train.reshape(3, -1).tolist(), "query": query.reshape(-1).tolist(),
                        "finetune": FEWSHOT_CONFIGS}}
    js = run_node(spec, tmp_path_factory.mktemp("fewshot"))["fewshot"]
    return weights, train, query, js


def test_fewshot_forward_and_gradients(fewshot_case):
    weights, train, query, js = fewshot_case
    model = OmniglotCNN(n_way=3, filters=24).double()
    params = decode_params(weights["params"])
    logits = functional_call(model, params, (torch.cat([train, query[None]]),))
    assert maxdiff(logits, js["logits"]) < TOL
    loss_fn = make_loss(model, "cross_entropy")
    grads, loss = torch.func.grad_and_value(loss_fn)(params, (train, torch.arange(3)))
    assert abs(float(loss) - js["loss"]) < TOL
    assert set(js["grads"]) == set(grads)
    for k, g in grads.items():
        assert maxdiff(g, js["grads"][k]) < TOL, k


@pytest.mark.parametrize("which", range(len(FEWSHOT_CONFIGS)))
def test_fewshot_finetuned_probabilities(fewshot_case, which):
    weights, train, query, js = fewshot_case
    model = OmniglotCNN(n_way=3, filters=24).double()
    ft = {**weights["finetune"], **FEWSHOT_CONFIGS[which]}
    for side, key in (("meta", "params"), ("random", "init")):
        ref = fewshot_reference(model, decode_params(weights[key]), train, query, ft)
        got = js["finetune"][which][side]
        assert abs(sum(got["probs"]) - 1) < 1e-9
        for name in ("probs", "before", "losses"):
            assert maxdiff(ref[name], got[name]) < TOL, (side, name)


def test_fewshot_float32_torch_agrees(fewshot_case):
    """The demo computes in float64; training runs in float32. The two agree to 1e-4 as well."""
    weights, train, query, js = fewshot_case
    model = OmniglotCNN(n_way=3, filters=24)
    ft = weights["finetune"]
    ref = fewshot_reference(model, decode_params(weights["params"], torch.float32), train.float(), query.float(), ft)
    assert maxdiff(ref["probs"], js["finetune"][0]["meta"]["probs"]) < TOL


@pytest.fixture(scope="module")
def sine_case(tmp_path_factory):
    weights = export_demo(sine_checkpoint(), "sine")
    g = torch.Generator().manual_seed(8)
    xs = (torch.rand(7, generator=g, dtype=torch.float64) * 10 - 5)
    ys = 3.0 * torch.sin(xs + 1.0)
    grid = torch.linspace(-5, 5, 41, dtype=torch.float64)
    spec = {"sine": {"weights": weights, "xs": xs.tolist(), "ys": ys.tolist(), "grid": grid.tolist()}}
    js = run_node(spec, tmp_path_factory.mktemp("sine"))["sine"]
    return weights, xs, ys, grid, js


def test_sine_forward_gradients_and_curves(sine_case):
    weights, xs, ys, grid, js = sine_case
    model = MLP((1, 64, 64, 1), "tanh").double()
    loss_fn = make_loss(model, "mse")
    for side, key in (("meta", "params"), ("random", "init")):
        params = decode_params(weights[key])
        if side == "meta":
            out = functional_call(model, params, (grid[:, None],))
            assert maxdiff(out[:, 0], js["pred"]) < TOL
            grads, loss = torch.func.grad_and_value(loss_fn)(params, (xs[:, None], ys[:, None]))
            assert abs(float(loss) - js["loss"]) < TOL
            for k, g in grads.items():
                assert maxdiff(g, js["grads"][k]) < TOL, k
        record = weights["finetune"]["record"]
        k = max(record)
        batches = (xs[:, None].expand(k, -1, -1), ys[:, None].expand(k, -1, -1))
        traj = adapt(loss_fn, params, batches, SGD(weights["finetune"]["lr"]), keep=True)
        assert maxdiff(traj.losses, js[side]["losses"]) < TOL
        for s in record:
            curve = functional_call(model, traj.params[s], (grid[:, None],))[:, 0]
            assert maxdiff(curve, js[side]["curves"][str(s)]) < TOL, (side, s)
