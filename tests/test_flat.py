"""The flat-buffer layout (reptile.flat) and the chunked compiled task of reptile.fast."""
from __future__ import annotations

import pytest
import torch

from reptile import fast, tree
from reptile.algorithms import meta_update
from reptile.flat import FLAT, FlatLayout
from reptile.inner import SGD, Adam
from reptile.losses import make_loss, params_of
from reptile.models import OmniglotCNN


def _params():
    torch.manual_seed(0)
    return params_of(OmniglotCNN(n_way=3, filters=6).double())


@pytest.mark.parametrize("channels_last", [False, True])
def test_flatten_unflatten_round_trip_and_layout(channels_last):
    p = _params()
    lay = FlatLayout.of(p, channels_last)
    flat = lay.flatten(p)
    assert flat.shape == (tree.numel(p),) and lay.numel == flat.numel()
    back = lay.unflatten(flat)
    for k in p:
        assert torch.equal(back[k], p[k]) and back[k].data_ptr() >= flat.data_ptr()  # views, same values
        if p[k].ndim == 4 and channels_last:
            assert back[k].is_contiguous(memory_format=torch.channels_last)
    if not channels_last:  # row-major: the same vector as reptile.tree.flatten
        assert torch.equal(flat, tree.flatten(p))
    copies = lay.unflatten_copy(flat)
    flat.zero_()
    assert all(torch.equal(copies[k], p[k]) and copies[k].is_contiguous() for k in p)


def test_state_round_trip_and_errors():
    p = _params()
    lay = FlatLayout.of(p, True)
    opt = Adam(1e-2)
    state = opt.init(p)
    state["m"] = {k: torch.rand_like(v) for k, v in p.items()}
    flat = lay.flatten_state(state)
    assert set(flat["m"]) == {FLAT} and flat["t"] is state["t"]
    back = lay.unflatten_state(flat)
    assert all(torch.equal(back["m"][k], state["m"][k]) for k in p)
    with pytest.raises(ValueError, match="differ from the layout"):
        lay.flatten(dict(reversed(list(p.items()))))
    with pytest.raises(ValueError, match="1-d buffer of"):
        lay.unflatten(torch.zeros(3))


def test_chunk_size_divides_k_and_respects_the_limit():
    assert [fast.chunk_size(k, 10) for k in (1, 5, 8, 10, 12, 13, 15, 50)] == [1, 5, 8, 10, 6, 1, 5, 10]
    assert fast.chunk_size(50) == 5 and fast.chunk_size(8) == 8  # the default limit, MAX_UNROLLED_STEPS = 8
    for k in range(1, 40):
        c = fast.chunk_size(k, 7)
        assert k % c == 0 and c <= 7


@pytest.mark.parametrize("name,opt", [("reptile", Adam(1e-2)), ("fomaml", Adam(1e-2)), ("fomaml", SGD(0.1))])
@pytest.mark.parametrize("limit", [3, 1])
def test_chunked_compiled_task_equals_eager_float64(monkeypatch, name, opt, limit):
    """k = 6 steps as 2 calls of a 3-step graph (or 6 calls of one step): the eager update, the
    Adam state (m, v, t) and the losses to 1e-10 (float64: only summation order differs). No batch
    norm (see tests/test_fast.py: Adam amplifies rounding in exactly-zero gradients)."""
    monkeypatch.setattr(fast, "MAX_UNROLLED_STEPS", limit)
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=6, norm="none").double()
    loss_fn, phi = make_loss(model, "cross_entropy"), params_of(model)
    g = torch.Generator().manual_seed(1)
    batches = (torch.rand(6, 5, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 3, (6, 5), generator=g))
    torch._dynamo.reset()
    update = fast.make_meta_update(name, loss_fn, opt, compile=True, channels_last=True,
                                   compile_options={"backend": "eager"})
    state = opt.init(phi)
    ue, se, le = meta_update(name, loss_fn, phi, batches, opt, state)
    uf, sf, lf = update(phi, batches, state)
    for k in phi:
        torch.testing.assert_close(uf[k], ue[k], rtol=1e-10, atol=1e-10, msg=k)
    torch.testing.assert_close(lf, le, rtol=1e-10, atol=1e-10)
    if isinstance(opt, Adam):
        for part in ("m", "v"):
            for k in phi:
                torch.testing.assert_close(sf[part][k], se[part][k], rtol=1e-10, atol=1e-10)
        assert float(sf["t"]) == float(se["t"]) == 6
