"""The ``convention="tensorflow"`` option of the CNNs against hand-written references.

References written out independently of ``reptile.models``: TensorFlow's 'SAME' rule for a
3x3 kernel as explicit ``F.pad`` + ``F.conv2d`` (with the pixel counts of a 28x28 Omniglot
input worked out by hand), and Glorot-uniform bounds computed from the layer sizes.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reptile.models import (CONVENTIONS, MiniImageNetCNN, OmniglotCNN, SameConv2d, build_model, model_spec,
                            same_padding, seeded_init)


def test_same_padding_rule_by_hand():
    # TF 'SAME', kernel 3, stride 2: out = ceil(n / 2), total = (out - 1) * 2 + 3 - n, extra pixel after
    assert same_padding(28, 3, 2) == (0, 1)   # out 14: total 26 + 3 - 28 = 1
    assert same_padding(14, 3, 2) == (0, 1)   # out 7:  12 + 3 - 14 = 1
    assert same_padding(7, 3, 2) == (1, 1)    # out 4:  6 + 3 - 7 = 2
    assert same_padding(4, 3, 2) == (0, 1)    # out 2:  2 + 3 - 4 = 1
    assert same_padding(84, 3, 1) == (1, 1)   # stride 1: symmetric
    assert same_padding(5, 1, 1) == (0, 0)


def test_same_conv_equals_explicit_pad_and_conv():
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2).double()
    for size in (28, 14, 7, 4, 9):
        x = torch.randn(2, 2, size, size, dtype=torch.float64)
        out = conv(x)
        before, after = {28: (0, 1), 14: (0, 1), 7: (1, 1), 4: (0, 1), 9: (1, 1)}[size]  # by hand, as above
        ref = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, conv.bias, stride=2)
        assert out.shape == (2, 3, math.ceil(size / 2), math.ceil(size / 2))
        # same float64 kernel on the same padded input: only summation order can differ
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_same_padding_differs_from_symmetric_at_stride_2():
    torch.manual_seed(0)
    conv = SameConv2d(1, 1, 3, stride=2).double()
    x = torch.randn(1, 1, 28, 28, dtype=torch.float64)
    sym = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert sym.shape == conv(x).shape
    assert not torch.allclose(sym, conv(x))  # the kernel is placed one pixel differently


@pytest.mark.parametrize("cls,shape", [(OmniglotCNN, (3, 1, 28, 28)), (MiniImageNetCNN, (2, 3, 84, 84))])
def test_tensorflow_model_forward_by_hand(cls, shape):
    """The whole network as explicit F.pad + conv + batch norm (batch statistics, eps 1e-3) + ReLU."""
    torch.manual_seed(1)
    model = cls(n_way=5, filters=4, convention="tensorflow").double()
    x = torch.rand(*shape, dtype=torch.float64)
    h = x
    for block in model.features:
        conv, bn = block[0], block[1]
        stride = conv.stride[0]
        total = max((math.ceil(h.shape[-1] / stride) - 1) * stride + 3 - h.shape[-1], 0)
        h = F.conv2d(F.pad(h, (total // 2, total - total // 2) * 2), conv.weight, conv.bias, stride=stride)
        mean, var = h.mean((0, 2, 3), keepdim=True), h.var((0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-3) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        if cls is MiniImageNetCNN:
            h = F.max_pool2d(F.pad(h, (0, h.shape[-1] % 2, 0, h.shape[-2] % 2), value=-math.inf), 2)
        h = F.relu(h)
    ref = model.classifier(h.flatten(1))
    # float64 throughout; differences are summation order only
    torch.testing.assert_close(model(x), ref, rtol=1e-10, atol=1e-10)


def test_tensorflow_init_glorot_uniform_zero_bias():
    model = seeded_init(0, lambda: OmniglotCNN(n_way=5, filters=64, convention="tensorflow"))
    for name, p in model.named_parameters():
        if name.endswith("bias") and ".1." not in name:  # conv and dense biases (".1." is batch norm)
            assert torch.count_nonzero(p) == 0, name
        elif name.endswith("weight") and p.ndim in (2, 4):
            fan_in = p.shape[1] * (p[0, 0].numel() if p.ndim == 4 else 1)
            fan_out = p.shape[0] * (p[0, 0].numel() if p.ndim == 4 else 1)
            limit = math.sqrt(6 / (fan_in + fan_out))
            assert p.abs().max() <= limit, name
            # U(-l, l) has standard deviation l / sqrt(3); with >= 1280 draws the sample std is
            # within 10% of it (its relative standard error is below 3%)
            assert abs(p.std().item() / (limit / math.sqrt(3)) - 1) < 0.1, name
    bn = model.features[0][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0) and bn.eps == 1e-3


def test_default_unchanged_and_spec_round_trip():
    torch.manual_seed(0)
    a = OmniglotCNN(n_way=5, filters=8)
    torch.manual_seed(0)
    b = OmniglotCNN(n_way=5, filters=8, convention="pytorch")
    assert CONVENTIONS[0] == "pytorch" and a.convention == "pytorch"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert "convention" not in model_spec(a)["kwargs"]  # specs of older checkpoints still match
    tf = OmniglotCNN(n_way=5, filters=8, convention="tensorflow")
    spec = model_spec(tf)
    assert spec["kwargs"]["convention"] == "tensorflow"
    rebuilt = build_model(spec["name"], **spec["kwargs"])
    assert isinstance(rebuilt.features[0][0], SameConv2d)
    assert [n for n, _ in rebuilt.named_parameters()] == [n for n, _ in a.named_parameters()]


def test_unknown_convention_is_named():
    with pytest.raises(ValueError, match="convention 'tf'.*pytorch.*tensorflow"):
        OmniglotCNN(convention="tf")


def test_cli_convention_flag_reaches_the_few_shot_model():
    """``reptile train fewshot --convention tensorflow`` -> FewShotConfig -> build_fewshot_model ->
    a CNN built with 'SAME' convolutions (the default stays PyTorch's)."""
    from types import SimpleNamespace

    from reptile.cli import build_parser
    from reptile.fewshot import FewShotConfig, build_fewshot_model
    from reptile.setups import config_from

    parser = build_parser()
    for flag, expected in (([], "pytorch"), (["--convention", "tensorflow"], "tensorflow")):
        args = parser.parse_args(["train", "fewshot", *flag])
        cfg = config_from(FewShotConfig, vars(args))
        assert cfg.convention == expected
        data = SimpleNamespace(image_shape=(28, 28, 1), channels=1)  # what build_fewshot_model reads
        model = build_fewshot_model(data, 5, cfg.model, 8, cfg.norm, cfg.convention)
        assert model.convention == expected
        assert any(isinstance(m, SameConv2d) for m in model.modules()) == (expected == "tensorflow")
