"""The default training path (TrainConfig compile/channels_last = "auto", reptile.fast) and its rules.

Equality with the eager reference over several meta-iterations, Adam state included: float64 to
1e-10 with the compile machinery running dynamo's captured graph (backend "eager": the same graph
inductor compiles, without a C++ build, so the test costs seconds), and once with the real inductor
compiler in float32. The auto rule itself is checked on the paper's CNN without compiling anything.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from reptile import fast
from reptile.fast import AUTO_COMPILE_MIN_PARAMS, choose_fast_path
from reptile.losses import make_loss, params_of
from reptile.models import MLP, OmniglotCNN
from reptile.train import MetaTrainer, TrainConfig


def _tiny(dtype=torch.float64, norm="none", filters=4):
    torch.manual_seed(0)
    model = OmniglotCNN(n_way=3, filters=filters, norm=norm).to(dtype)
    loss_fn, phi = make_loss(model, "cross_entropy"), params_of(model)

    def sampler(rng: np.random.Generator):
        x = torch.as_tensor(rng.random((3, 4, 1, 28, 28)), dtype=dtype)
        return x, torch.as_tensor(rng.integers(0, 3, (3, 4)))
    return loss_fn, phi, sampler


def _close(a, b, tol):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            _close(a[k], b[k], tol)
        else:
            torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=k)


def _train(loss_fn, phi, sampler, iterations=3, **cfg):
    base = dict(algorithm="reptile", inner_steps=3, inner_batch=4, inner_optimizer="adam", inner_lr=1e-2,
                outer_lr=1.0, meta_batch=3, iterations=iterations)
    trainer = MetaTrainer(loss_fn, phi, sampler, TrainConfig(**{**base, **cfg}))
    trainer.run(progress=False)
    return trainer


@pytest.fixture
def eager_backend(monkeypatch):
    """Compiled updates run dynamo's captured graph without inductor (seconds, not minutes)."""
    monkeypatch.setattr(fast, "COMPILE_OPTIONS", {"backend": "eager"})
    torch._dynamo.reset()


# -- the auto rule ---------------------------------------------------------------------------------
def test_auto_compiles_the_paper_cnn_and_keeps_small_models_eager():
    big = params_of(OmniglotCNN(n_way=5, filters=64))
    assert sum(v.numel() for v in big.values()) >= AUTO_COMPILE_MIN_PARAMS
    path = choose_fast_path("auto", "auto", "reptile", big)
    if fast.compile_unavailable("cpu") is None:
        assert path.compile and path.channels_last
    for algorithm in ("maml", "joint"):  # compiled only when asked (MAML's whole update takes minutes)
        assert not choose_fast_path("auto", "auto", algorithm, big).compile
    assert not choose_fast_path("auto", "auto", "reptile", big, batching="vmap").compile
    tiny = params_of(OmniglotCNN(n_way=3, filters=4))
    mlp = params_of(MLP((1, 64, 64, 1)))
    for phi in (tiny, mlp):
        p = choose_fast_path("auto", "auto", "reptile", phi)
        assert not p.compile and not p.channels_last and "eagerly" in p.reason
    # explicit settings win
    assert choose_fast_path(False, False, "reptile", big) == fast.FastPath(False, False, "compile=False")
    assert choose_fast_path(False, True, "reptile", tiny).channels_last


def test_default_config_is_auto_and_the_trainer_says_what_it_runs():
    cfg = TrainConfig()
    assert cfg.compile == "auto" and cfg.channels_last == "auto"
    loss_fn, phi, sampler = _tiny()
    t = MetaTrainer(loss_fn, phi, sampler, TrainConfig(iterations=1))
    assert not t.fast_path.compile and t._fast is None and "eager" in t.fast_path.describe()
    with pytest.raises(ValueError, match="compile must be True, False or 'auto'"):
        TrainConfig(compile="yes")


def test_compile_unavailable_warns_and_runs_eagerly(monkeypatch):
    monkeypatch.setenv("REPTILE_NO_COMPILE", "1")
    big = params_of(OmniglotCNN(n_way=5, filters=64))
    with pytest.warns(RuntimeWarning, match="REPTILE_NO_COMPILE"):
        p = choose_fast_path("auto", "auto", "reptile", big)
    assert not p.compile and not p.channels_last
    with pytest.warns(RuntimeWarning, match="eager path"):
        assert not choose_fast_path(True, "auto", "reptile", big).compile


# -- the compiled path gives the eager parameters ----------------------------------------------------
@pytest.mark.parametrize("algorithm,opt,reset", [("reptile", "adam", False), ("fomaml", "adam", False),
                                                 ("reptile", "sgd", False)])
def test_compiled_trainer_equals_eager_float64(eager_backend, algorithm, opt, reset):
    """Three meta-iterations of 3 tasks: parameters and the persistent Adam state (m, v, t) agree."""
    loss_fn, phi, sampler = _tiny()
    lr = 1e-2 if opt == "adam" else 0.1
    ref = _train(loss_fn, phi, sampler, algorithm=algorithm, inner_optimizer=opt, inner_lr=lr,
                 compile=False, channels_last=False)
    got = _train(loss_fn, phi, sampler, algorithm=algorithm, inner_optimizer=opt, inner_lr=lr,
                 compile=True, channels_last=True)
    assert got.fast_path.compile and got._fast.compiled
    _close(ref.phi, got.phi, 1e-10)
    _close(ref.inner_state, got.inner_state, 1e-10)


def test_independent_tasks_on_threads_equal_the_one_thread_loop(eager_backend):
    """reset_inner_state: tasks run concurrently (2 threads), summed in task order: equal to 1e-10."""
    loss_fn, phi, sampler = _tiny()
    threads = torch.get_num_threads()
    ref = _train(loss_fn, phi, sampler, reset_inner_state=True, compile=False, channels_last=False)
    torch.set_num_threads(2)
    try:
        got = _train(loss_fn, phi, sampler, reset_inner_state=True, compile=True, channels_last=True)
        assert got._parallel_tasks([sampler(np.random.default_rng(0))] * 2)
    finally:
        torch.set_num_threads(threads)
    _close(ref.phi, got.phi, 1e-10)


def test_failed_compilation_warns_and_continues_with_the_eager_numbers(monkeypatch):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("simulated compiler failure")
    monkeypatch.setattr(fast, "COMPILE_OPTIONS", {"backend": broken_backend})
    torch._dynamo.reset()
    loss_fn, phi, sampler = _tiny()
    ref = _train(loss_fn, phi, sampler, iterations=2, compile=False, channels_last=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*simulated compiler failure"):
        got = _train(loss_fn, phi, sampler, iterations=2, compile=True)
    assert not got._fast.compiled and "simulated" in got._fast.fallback_reason
    _close(ref.phi, got.phi, 1e-10)


def test_bad_inputs_still_raise_through_the_compiled_path(eager_backend):
    loss_fn, phi, _ = _tiny()
    update = fast.make_meta_update("reptile", loss_fn, fast.Adam(1e-2), compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "compile failed" warning: the error is the input's
        with pytest.raises(ValueError, match="do not fit the model"):
            update(phi, (torch.zeros(2, 4, 3, 28, 28, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.long)))


@pytest.mark.slow
def test_inductor_default_path_equals_eager_float32():
    """The real compiler (inductor, C++ kernels) through the trainer on a tiny CNN in float32.

    Tolerance 2e-5: fused kernels reorder float32 sums (relative rounding ~1e-7 per operation), and
    3 meta-iterations of 3 tasks x 3 Adam steps (lr 1e-2) accumulate it; a wrong graph (a missed
    step, a stale Adam moment) changes parameters by ~1e-2. No batch norm: a conv bias before
    batch norm has an exactly-zero gradient, which Adam turns from rounding noise into steps of
    size lr (see reptile.fast)."""
    if fast.compile_unavailable("cpu"):
        pytest.skip(fast.compile_unavailable("cpu"))
    torch._dynamo.reset()
    loss_fn, phi, sampler = _tiny(torch.float32)
    ref = _train(loss_fn, phi, sampler, compile=False, channels_last=False)
    got = _train(loss_fn, phi, sampler, compile=True, channels_last=True)
    assert got._fast.compiled and got._fast.fallback_reason is None
    assert all(s > 0 for s in got._fast.first_call_seconds.values())
    _close(ref.phi, got.phi, 2e-5)
    _close(ref.inner_state, got.inner_state, 2e-5)
