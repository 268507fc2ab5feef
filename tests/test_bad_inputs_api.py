"""Bad input at the Python API: a clear error and nothing half-written (issue 9; split from the
former tests/test_bad_inputs.py, issue 16 item 6). Harness: tests/bad_input_harness.py."""
from __future__ import annotations

from bad_input_harness import *  # noqa: F401,F403  (fixtures ctx, sine_run, server and the helpers)


def test_api_batch_of_wrong_shape(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    with pytest.raises(ValueError, match=r"leading \[k, b\] dimensions, got \(3, 5, 1\) and \(3, 4, 1\)"):
        meta_gradient("reptile", loss_fn, phi, (x, y[:, :4]), 0.1)
    with pytest.raises(ValueError, match=r"inputs of shape \(5, 3\) do not fit the model MLP"):
        meta_gradient("reptile", loss_fn, phi, (torch.randn(3, 5, 3), y), 0.1)
    with pytest.raises(ValueError, match="targets must be shaped like the model's output"):
        meta_gradient("reptile", loss_fn, phi, (x, torch.randn(3, 5, 2)), 0.1)
    with pytest.raises(ValueError, match="batches must be a pair of tensors"):
        meta_gradient("reptile", loss_fn, phi, ([1.0], [2.0]), 0.1)


def test_api_alpha_not_positive(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    for alpha in (0.0, -0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="alpha must be a positive finite number"):
            meta_gradient("reptile", loss_fn, phi, batches, alpha)


def test_api_k_too_small(ctx):
    model, loss_fn, phi, (x, y) = _mlp_setup()
    for name in ("maml", "fomaml"):
        with pytest.raises(ValueError, match="need at least 2 minibatches, got k = 1"):
            meta_gradient(name, loss_fn, phi, (x[:1], y[:1]), 0.1)


def test_api_weights_of_wrong_length(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    with pytest.raises(ValueError, match="needs k = 3 weights w_1..w_k, got 2"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="needs k = 3 weights"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights=None)


def test_api_weights_not_finite(ctx):  # NaN weights gave a NaN meta-gradient; a string a TypeError
    model, loss_fn, phi, batches = _mlp_setup()
    with pytest.raises(ValueError, match="weight w_2 must be a finite number, got nan"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights=[1.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="a list of numbers"):
        meta_gradient("combination", loss_fn, phi, batches, 0.1, weights="abc")
    with pytest.raises(ValueError, match="weight w_3 must be a finite number"):
        TrainConfig(algorithm="combination", inner_steps=3, weights=[1, 1, float("inf")])


def test_api_unknown_names(ctx):
    model, loss_fn, phi, batches = _mlp_setup()
    with pytest.raises(ValueError, match="unknown algorithm 'mamal'; choose one of"):
        meta_gradient("mamal", loss_fn, phi, batches, 0.1)
    with pytest.raises(ValueError, match="unknown algorithm 'mamal'; choose one of"):
        TrainConfig(algorithm="mamal")
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; choose one of \['linear', 'miniimagenet'"):
        build_model("resnet")
    with pytest.raises(ValueError, match=r"unknown criterion 'hinge'; choose one of \['cross_entropy', 'mse'\]"):
        make_loss(model, "hinge")


def test_api_params_of_wrong_shape(ctx):  # was "t() expects a tensor with <= 2 dimensions"
    model, loss_fn, phi, batches = _mlp_setup()
    bad = dict(phi, **{"net.0.weight": torch.randn(4, 1, 1)})
    with pytest.raises(ValueError, match=r"params\['net.0.weight'\] has shape \(4, 1, 1\), the model MLP expects \(4, 1\)"):
        meta_gradient("reptile", loss_fn, bad, batches, 0.1)


def test_api_dtype_mismatch(ctx):  # was "mat1 and mat2 must have the same dtype"
    model, loss_fn, phi, (x, y) = _mlp_setup()
    with pytest.raises(ValueError, match="inputs are torch.float64 but the parameters are torch.float32; convert"):
        meta_gradient("reptile", loss_fn, phi, (x.double(), y.double()), 0.1)


def test_api_train_config_not_whole_numbers(ctx):  # '5' gave a TypeError, 2.5 was accepted
    with pytest.raises(ValueError, match="inner_steps must be a whole number, got '5'"):
        TrainConfig(inner_steps="5")
    with pytest.raises(ValueError, match="iterations must be a whole number, got 2.5"):
        TrainConfig(iterations=2.5)
    with pytest.raises(ValueError, match="inner_lr must be a positive finite number, got -1"):
        TrainConfig(inner_lr=-1)


def test_api_hvp_bad_shapes(ctx):
    model, loss_fn, phi, _ = _mlp_setup()
    batch = (torch.randn(5, 1), torch.randn(5, 1))
    v = {k: torch.randn_like(p) for k, p in phi.items()}
    with pytest.raises(ValueError, match=r"non-empty leading batch dimension, got \(5, 1\) and \(4, 1\)"):
        analysis.hvp(loss_fn, phi, (batch[0], batch[1][:4]), v)
    with pytest.raises(ValueError, match=r"v\['net.0.weight'\] has shape \(2,\), phi\['net.0.weight'\] has \(4, 1\)"):
        analysis.hvp(loss_fn, phi, batch, {k: torch.randn(2) for k in phi})
    with pytest.raises(ValueError, match="v must have the keys of phi"):
        analysis.hvp(loss_fn, phi, batch, {"a": torch.randn(2)})
    with pytest.raises(ValueError, match="unknown HVP method 'fwd'"):
        analysis.hvp(loss_fn, phi, batch, v, method="fwd")
