"""The demo's JavaScript under node: drawing rasterization and the checks on weights files."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from reptile.demo_export import export_demo
from reptile.models import OmniglotCNN, model_spec

from test_demo_parity import NODE, run_node

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run the demo's JavaScript)")


def test_rasterize_centers_scales_and_inverts(tmp_path):
    line = [[[10, 50], [90, 50]]]
    ell = [[[0, 0], [0, 30], [15, 30]]]
    strokes = [
        [],                                                  # empty
        line,
        [[[x * 7 + 300, y * 7 - 40] for x, y in line[0]]],   # the same line, scaled and moved
        ell,
        [[[5, 5]]],                                          # a dot
    ]
    imgs = [np.asarray(a).reshape(28, 28) for a in run_node({"raster": strokes}, tmp_path)["raster"]]
    empty, img, moved, ell_img, dot = imgs
    assert (empty == 1).all()
    for im in imgs:
        assert im.min() >= 0 and im.max() <= 1
    np.testing.assert_allclose(img, moved, atol=1e-12)  # position and size of the drawing do not matter
    ink = 1 - img
    cols = np.nonzero(ink.sum(0) > 0.05)[0]
    rows = np.nonzero(ink.sum(1) > 0.05)[0]
    assert 19 <= cols.max() - cols.min() + 1 <= 21  # the longer side spans the 20-pixel box
    assert rows.max() - rows.min() + 1 <= 4  # a stroke a couple of pixels wide
    assert img.min() == 0.0  # full ink is 0, background 1
    ys, xs = np.mgrid[:28, :28]
    for im in (img, ell_img):
        w = 1 - im
        cy, cx = (w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()
        assert abs(cx - 13.5) < 4 and abs(cy - 13.5) < 4
    # the L's bounding box (not its center of mass) is centered
    w = (1 - ell_img) > 0.05
    r, c = np.nonzero(w)
    assert abs((r.min() + r.max()) / 2 - 13.5) <= 1 and abs((c.min() + c.max()) / 2 - 13.5) <= 1
    assert (1 - dot).sum() > 1


def _fewshot_weights():
    torch.manual_seed(0)
    m = OmniglotCNN(n_way=3, filters=2)
    return export_demo({"params": dict(m.named_parameters()), "model_spec": model_spec(m),
                        "config": {"inner_optimizer": "adam", "inner_lr": 1e-3}, "extra": {}})


def test_malformed_weights_are_refused_with_a_clear_message(tmp_path):
    good = _fewshot_weights()
    cases = []

    def case(mutate, expect, kind="fewshot", raw=None):
        w = copy.deepcopy(good)
        if mutate:
            mutate(w)
        cases.append(({"text": raw if raw is not None else json.dumps(w), "kind": kind}, expect))

    case(None, None)
    case(None, "not valid JSON", raw="{\"format\": ")
    case(None, "not a JSON object", raw="[1, 2]")
    case(lambda w: w.update(format="something"), "format")
    case(lambda w: w.update(version=2), "version 1")
    case(None, 'needs "sine" weights', kind="sine")
    case(lambda w: w["params"].pop("classifier.bias"), "classifier.bias is missing")
    case(lambda w: w["params"]["classifier.weight"].update(shape=[3, 9]), "shape [3,9] needs 108")
    case(lambda w: w["init"].update({"extra.weight": w["init"]["classifier.bias"]}), "unexpected parameter extra.weight")
    case(lambda w: w["params"]["classifier.bias"].update(b64="AAAA"), "holds 3 bytes but shape [3] needs 12")
    case(lambda w: w["params"]["classifier.bias"].update(b64="%%%"), "not valid base64")
    case(lambda w: w["params"].update({"classifier.bias": {"shape": [3], "data": [0, 1, None]}}), "numbers only")
    case(lambda w: w["model"]["kwargs"].update(n_way=5), "need a 3-way model")
    case(lambda w: w["finetune"].update(lr=-1), "finetune.lr")
    case(lambda w: w.pop("init"), "init: missing")
    out = run_node({"bad": [c for c, _ in cases]}, tmp_path)["bad"]
    for (c, expect), got in zip(cases, out):
        if expect is None:
            assert got == {"ok": True}
        else:
            assert not got["ok"] and got["name"] == "WeightsError", (expect, got)
            assert expect in got["message"], (expect, got["message"])
