"""Hessian-vector products of a ``LossFn``, and what is built on them.

With ``L(phi) = loss_fn(phi, batch)`` and ``H = L''(phi)`` (the Hbar_i of REFERENCE.md section 2
when ``phi = phi_1`` and ``batch`` is minibatch i):

* :func:`hvp` -- ``H v`` by forward-over-reverse (``jvp`` of ``grad``, "fwd-rev") or
  reverse-over-reverse (``vjp`` of ``grad``, "rev-rev"); the default ``"auto"`` picks the fastest
  (see :func:`hvp`).
* :class:`HVPOperator` -- ``H`` at one point as a reusable operator: the gradient is computed
  once, each product after that is one linearized pass. It also gives the dense Hessian
  (:meth:`HVPOperator.dense`, small models only) and a ``scipy.sparse.linalg.LinearOperator`` on
  flattened parameters (:func:`reptile.tree.flatten` order).
* :func:`top_eigenvalues` (Lanczos, scipy ``eigsh``) and :func:`power_iteration`.
* :func:`third_derivative` -- ``T[u, v] = d/dt H(phi + t u) v |_{t=0}``, the directional third
  derivative the second-order Taylor terms need.

Shapes: ``phi``, ``v``, ``u`` and every result are ``Params`` with the keys and shapes of
``phi``; flattened vectors are 1-d with ``P = reptile.tree.numel(phi)`` entries. Products are
computed in ``phi``'s dtype (the analysis uses float64).

Models whose operations lack forward-mode AD (e.g. a custom ``autograd.Function`` without
``jvp``) make "fwd-rev" fall back to "rev-rev" with a ``RuntimeWarning`` saying so.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor
from torch.func import grad, jvp, linearize, vjp, vmap

from reptile import tree
from reptile.types import Batch, LossFn, Params

from .validation import check_batch, check_like, check_params, scalar_loss

METHODS = ("fwd-rev", "rev-rev")
#: what :func:`hvp` accepts: the two methods and ``"auto"`` (its default)
HVP_METHODS = ("auto",) + METHODS


def _check_method(method: str, allowed: tuple[str, ...] = METHODS) -> None:
    if method not in allowed:
        raise ValueError(f"unknown HVP method {method!r}; choose one of {allowed}")


def forward_ad_missing(err: BaseException) -> bool:
    """True when ``err`` says that an operation has no forward-mode (jvp) derivative."""
    if isinstance(err, NotImplementedError):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "forward ad" in msg or "forward-mode" in msg or "forward mode" in msg or "jvp" in msg
        or ("not implemented" in msg and "derivative" in msg))


def _warn_fallback(err: BaseException, what: str) -> None:
    warnings.warn(f"{what}: the model uses an operation without forward-mode AD support "
                  f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); falling back to "
                  f"reverse-over-reverse ('rev-rev'), which gives the same numbers",
                  RuntimeWarning, stacklevel=3)


def _grad_fn(loss_fn: LossFn, batch: Batch) -> Callable[[Params], Params]:
    f = scalar_loss(loss_fn)
    g = grad(f)
    return lambda p: g(p, batch)


def _validate(phi: Params, batch: Batch, method: str, *vs: Params, allowed: tuple[str, ...] = METHODS) -> None:
    _check_method(method, allowed)
    check_params(phi)
    check_batch(batch)
    for i, v in enumerate(vs):
        check_like(v, phi, "v" if i == 0 else "u")


def hvp(loss_fn: LossFn, phi: Params, batch: Batch, v: Params, method: str = "auto") -> Params:
    """Hessian of ``loss_fn(., batch)`` at ``phi`` times ``v``: ``L''(phi) v``.

    Args:
        loss_fn: scalar loss of (params, batch).
        phi: the point, ``Params``.
        batch: one minibatch ``(x[b, ...], y[b, ...])``.
        v: direction, ``Params`` shaped like ``phi``.
        method: ``"auto"`` (default), ``"fwd-rev"`` (``jvp`` of ``grad``) or ``"rev-rev"`` (``vjp``
            of ``grad``). ``"auto"`` is reverse-over-reverse: with plain ``torch.autograd`` (the
            gradient's graph is built once with ``create_graph=True`` and differentiated once more
            against ``v``; no ``torch.func`` wrappers), and for convolutional models of the paper's
            size (:func:`reptile.fast.choose_fast_path`'s rule: a 4-d leaf and at least
            ``reptile.fast.AUTO_COMPILE_MIN_PARAMS`` parameters) a ``torch.compile``-d channels-last
            product, compiled once per ``loss_fn`` and input shape (seconds to a minute) and then
            cached. Measured (``benchmarks/bench_hvp.py``): 1.1x a ``torch.func.grad`` gradient for
            the sine MLP, under 2x for the Omniglot CNN; "fwd-rev" is 3.7x and 5.0x eager. Under
            ``torch.func`` transforms, or when ``phi`` or ``v`` require grad, ``"auto"`` uses the
            ``torch.func`` form (so that outer transforms see through it). All methods agree to
            rounding.
    Returns:
        ``Params`` shaped like ``phi``.
    Raises:
        ValueError: unknown method, non-scalar loss, ``v`` not shaped like ``phi``, bad batch.
    Warns:
        RuntimeWarning: "fwd-rev" on a model without forward-mode support (then "rev-rev" is used);
        "auto" when compiling fails (then the eager product is used).
    """
    _validate(phi, batch, method, v, allowed=HVP_METHODS)
    if method == "auto":
        if _plain_tensors(phi, v, batch):
            compiled = _compiled_hvp(loss_fn, phi)
            if compiled is not None:
                out = compiled(phi, batch, v)
                if out is not None:
                    return out
            return _autograd_hvp(loss_fn, phi, batch, v)
        method = "rev-rev"
    gfun = _grad_fn(loss_fn, batch)
    if method == "fwd-rev":
        try:
            return jvp(gfun, (phi,), (v,))[1]
        except (NotImplementedError, RuntimeError) as e:
            if not forward_ad_missing(e):
                raise
            _warn_fallback(e, "hvp(method='fwd-rev')")
    return vjp(gfun, phi)[1](v)[0]


def _plain_tensors(phi: Params, v: Params, batch: Batch) -> bool:
    """No leaf requires grad or is wrapped by a ``torch.func`` transform (then plain autograd is exact)."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    leaves = [*phi.values(), *v.values(), *(t for t in batch if isinstance(t, Tensor))]
    return not any(t.requires_grad or wrapped(t) for t in leaves)


def _autograd_hvp(loss_fn: LossFn, phi: Params, batch: Batch, v: Params) -> Params:
    """Reverse-over-reverse with ``torch.autograd``: ``d/dphi <L'(phi), v>``, the gradient's graph reused."""
    keys = list(phi)
    leaves = [phi[k].detach().requires_grad_() for k in keys]
    with torch.enable_grad():
        loss = scalar_loss(loss_fn)(dict(zip(keys, leaves)), batch)
        g = torch.autograd.grad(loss, leaves, create_graph=True)
        used = [i for i, gi in enumerate(g) if gi.requires_grad]  # a leaf whose gradient is constant in phi
        hv = torch.autograd.grad([g[i] for i in used], leaves, grad_outputs=[v[keys[i]] for i in used],
                                 allow_unused=True) if used else [None] * len(keys)
    return {k: (h.detach() if h is not None else torch.zeros_like(phi[k])) for k, h in zip(keys, hv)}


class _CompiledHVP:
    """``(phi, batch, v) -> H v``: a ``torch.compile``-d channels-last reverse-over-reverse product on
    flat buffers (:class:`reptile.flat.FlatLayout`: three tensor inputs to guard instead of two per
    leaf, one output); returns ``None`` (after a ``RuntimeWarning``, once) if compiling fails, so the
    caller runs eagerly. One compiled function per parameter layout."""

    def __init__(self, loss_fn: LossFn, device: torch.device) -> None:
        from reptile.fast import channels_last_images, compile_kwargs
        self._loss_fn, self._cl_images, self._kwargs = loss_fn, channels_last_images, compile_kwargs(device)
        self._fns: dict = {}
        self.failed: str | None = None

    def _fn(self, layout):
        if layout not in self._fns:
            product = hvp_fn(self._loss_fn, "rev-rev")

            def flat_product(phi: Tensor, batch: Batch, v: Tensor) -> Tensor:
                return layout.flatten(product(layout.unflatten(phi), batch, layout.unflatten(v)))
            self._fns[layout] = torch.compile(flat_product, **self._kwargs)
        return self._fns[layout]

    def __call__(self, phi: Params, batch: Batch, v: Params) -> Params | None:
        from reptile.flat import FlatLayout
        if self.failed:
            return None
        x, *rest = batch
        x = self._cl_images(x) if x.ndim == 4 else x
        layout = FlatLayout.of(phi, channels_last=True)
        try:
            out = self._fn(layout)(layout.flatten(phi), (x, *rest), layout.flatten({k: v[k] for k in phi}))
        except Exception as e:  # noqa: BLE001 - the eager rerun raises real input errors
            from reptile.fast import _describe
            self.failed = _describe(e)
            warnings.warn(f"hvp: torch.compile failed ({self.failed}); using the eager product (same numbers)",
                          RuntimeWarning, stacklevel=3)
            return None
        return layout.unflatten_copy(out)


_COMPILED_HVPS: "weakref.WeakKeyDictionary[LossFn, _CompiledHVP]" = weakref.WeakKeyDictionary()


def _compiled_hvp(loss_fn: LossFn, phi: Params) -> _CompiledHVP | None:
    """The cached compiled product for ``loss_fn`` when the auto rule compiles this model, else ``None``."""
    from reptile.fast import AUTO_COMPILE_MIN_PARAMS, compile_unavailable
    ref = next(iter(phi.values()))
    if ref.device.type != "cpu" and ref.device.type != "cuda":
        return None
    if not any(t.ndim == 4 for t in phi.values()) or sum(t.numel() for t in phi.values()) < AUTO_COMPILE_MIN_PARAMS:
        return None
    if compile_unavailable(ref.device) is not None:
        return None
    try:
        op = _COMPILED_HVPS.get(loss_fn)
        if op is None:
            op = _COMPILED_HVPS[loss_fn] = _CompiledHVP(loss_fn, ref.device)
    except TypeError:  # a loss that cannot be weakly referenced: compile per call would not pay
        return None
    return op


def hvp_fn(loss_fn: LossFn, method: str = "rev-rev", compile: bool = False
           ) -> Callable[[Params, Batch, Params], Params]:
    """A reusable ``(phi, batch, v) -> H v`` function, optionally wrapped in ``torch.compile``.

    For many products at many points (e.g. along a training run). Without ``compile`` it is
    :func:`hvp` minus the input checks. With ``compile=True`` the first call compiles (10-70 s on
    a 2-core CPU for the Omniglot CNN; again for each new input shape), after which a product of
    that CNN took 1.3-2.3x an eager gradient (``benchmarks/bench_hvp.py``). No forward-mode
    fallback is attempted under compile: use "rev-rev" for models without jvp rules.
    """
    _check_method(method)
    f = scalar_loss(loss_fn)
    g = grad(f)

    def fwd_rev(phi: Params, batch: Batch, v: Params) -> Params:
        return jvp(lambda p: g(p, batch), (phi,), (v,))[1]

    def rev_rev(phi: Params, batch: Batch, v: Params) -> Params:
        return vjp(lambda p: g(p, batch), phi)[1](v)[0]

    fn = fwd_rev if method == "fwd-rev" else rev_rev
    return torch.compile(fn) if compile else fn


def third_derivative(loss_fn: LossFn, phi: Params, batch: Batch, u: Params, v: Params,
                     method: str = "fwd-rev") -> Params:
    """The third-derivative tensor contracted twice: ``T[u, v] = d/dt (L''(phi + t u) v)`` at t = 0.

    ``T`` is symmetric, so ``T[u, v] = T[v, u]``. "fwd-rev" computes it as ``jvp`` of the
    forward-over-reverse HVP; "rev-rev" as ``grad_phi <u, L''(phi) v>`` (reverse three times).
    Shapes as in :func:`hvp`. Raises and warns as :func:`hvp`.
    """
    _validate(phi, batch, method, v, u)
    gfun = _grad_fn(loss_fn, batch)
    if method == "fwd-rev":
        try:
            return jvp(lambda p: jvp(gfun, (p,), (v,))[1], (phi,), (u,))[1]
        except (NotImplementedError, RuntimeError) as e:
            if not forward_ad_missing(e):
                raise
            _warn_fallback(e, "third_derivative(method='fwd-rev')")
    return grad(lambda p: tree.dot(u, vjp(gfun, p)[1](v)[0]))(phi)


class HVPOperator:
    """The Hessian ``H = L''(phi)`` of one minibatch loss, as a reusable linear operator.

    Built once: the gradient ``L'(phi)`` (``.grad``) is computed at construction, and each
    product afterwards costs one linearized pass:

    * ``"rev-rev"`` keeps the ``vjp`` closure of ``grad`` (cheap to build: one gradient with its
      graph); each ``H v`` is one backward pass through it.
    * ``"fwd-rev"`` uses ``torch.func.linearize`` of ``grad`` (costly to build -- it traces the
      jvp graph, about 0.2 s for the sine MLP -- then each product is one forward-mode pass); worth
      it for eigen-solvers that need hundreds of products.

    Args:
        loss_fn, phi, batch: as in :func:`hvp`.
        method: ``"rev-rev"`` (default) or ``"fwd-rev"``.
    Attributes:
        grad: ``Params``, ``L'(phi)``.
        numel: ``P``, the number of parameters.
    """

    def __init__(self, loss_fn: LossFn, phi: Params, batch: Batch, method: str = "rev-rev") -> None:
        _validate(phi, batch, method)
        self.phi, self.batch, self.method = phi, batch, method
        gfun = _grad_fn(loss_fn, batch)
        self.numel = tree.numel(phi)
        self.dtype = next(iter(phi.values())).dtype
        self.device = next(iter(phi.values())).device
        if method == "fwd-rev":
            try:
                with warnings.catch_warnings():
                    # torch's tracing inside linearize warns about its own internals
                    warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
                    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")
                    self.grad, self._lin = linearize(gfun, phi)
                self._apply = lambda v: self._lin(v)
                return
            except (NotImplementedError, RuntimeError) as e:
                if not forward_ad_missing(e):
                    raise
                _warn_fallback(e, "HVPOperator(method='fwd-rev')")
                self.method = "rev-rev"
        self.grad, vjp_fn = vjp(gfun, phi)
        self._apply = lambda v: vjp_fn(v)[0]

    def __call__(self, v: Params) -> Params:
        """``H v`` for ``v`` shaped like ``phi``."""
        check_like(v, self.phi)
        return self._apply(v)

    def matvec(self, vec: Tensor) -> Tensor:
        """``H vec`` on flattened parameters: ``vec[P] -> [P]``."""
        return tree.flatten(self._apply(tree.unflatten(vec.to(self.dtype), self.phi)))

    def matmat(self, mat: Tensor, chunk: int = 256) -> Tensor:
        """``H @ mat`` for ``mat[P, m]`` -> ``[P, m]``; columns are vmapped ``chunk`` at a time."""
        if mat.ndim != 2 or mat.shape[0] != self.numel:
            raise ValueError(f"expected a matrix [{self.numel}, m], got {tuple(mat.shape)}")
        f = vmap(lambda col: tree.flatten(self._apply(tree.unflatten(col, self.phi))))
        cols = [f(mat[:, i:i + chunk].T.contiguous().to(self.dtype)).T for i in range(0, mat.shape[1], chunk)]
        return torch.cat(cols, dim=1)

    def dense(self, max_numel: int = 6000, chunk: int = 256) -> Tensor:
        """The full Hessian ``[P, P]`` (symmetrized: ``(H + H^T) / 2``, which only removes rounding).

        Raises:
            ValueError: ``P > max_numel`` (the matrix would need ``8 P^2`` bytes in float64).
        """
        if self.numel > max_numel:
            raise ValueError(f"a dense Hessian of {self.numel} parameters needs {8 * self.numel ** 2 / 1e9:.1f} GB "
                             f"in float64; raise max_numel if you mean it, or use the LinearOperator")
        h = self.matmat(torch.eye(self.numel, dtype=self.dtype, device=self.device), chunk)
        return (h + h.T) / 2

    def linear_operator(self) -> LinearOperator:
        """``H`` as a symmetric scipy ``LinearOperator`` on float64 numpy vectors of length P."""

        def mv(x: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1), device=self.device)
            return self.matvec(t).detach().cpu().double().numpy()

        def mm(x: np.ndarray) -> np.ndarray:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64), device=self.device)
            return self.matmat(t).detach().cpu().double().numpy()

        return LinearOperator((self.numel, self.numel), matvec=mv, rmatvec=mv, matmat=mm, dtype=np.float64)


def dense_hessian(loss_fn: LossFn, phi: Params, batch: Batch, method: str = "rev-rev", max_numel: int = 6000) -> Tensor:
    """Dense Hessian ``[P, P]`` of ``loss_fn(., batch)`` at ``phi`` in flattened order (small models)."""
    return HVPOperator(loss_fn, phi, batch, method).dense(max_numel)


def hessian_operator(loss_fn: LossFn, phi: Params, batch: Batch, method: str = "rev-rev") -> LinearOperator:
    """The Hessian as a scipy ``LinearOperator`` (gradient computed once, see :class:`HVPOperator`)."""
    return HVPOperator(loss_fn, phi, batch, method).linear_operator()


def top_eigenvalues(loss_fn: LossFn, phi: Params, batch: Batch, n: int = 1, *, which: str = "LA",
                    method: str = "rev-rev", tol: float = 1e-8, seed: int = 0,
                    maxiter: int | None = None) -> np.ndarray:
    """The ``n`` extreme Hessian eigenvalues by Lanczos (scipy ``eigsh``), largest first.

    Args:
        which: ``"LA"`` (largest algebraic, default), ``"LM"`` (largest magnitude), ``"SA"``.
        tol: relative accuracy asked of ARPACK.
        seed: seeds the start vector (``numpy.random.default_rng(seed)``), so runs repeat exactly.
    Returns:
        ``float64[n]`` sorted in decreasing order.
    Raises:
        ValueError: ``n`` not in ``1..P-1`` (ARPACK's limit).
    """
    op = HVPOperator(loss_fn, phi, batch, method)
    if not 1 <= n < op.numel:
        raise ValueError(f"n must be between 1 and P - 1 = {op.numel - 1}, got {n}")
    v0 = np.random.default_rng(seed).standard_normal(op.numel)
    vals = eigsh(op.linear_operator(), k=n, which=which, tol=tol, v0=v0, maxiter=maxiter,
                 return_eigenvectors=False)
    return np.sort(vals)[::-1]


def power_iteration(op: HVPOperator | LinearOperator, *, tol: float = 1e-8, max_iter: int = 1000,
                    seed: int = 0) -> tuple[float, np.ndarray]:
    """Largest-magnitude eigenvalue of a symmetric operator by power iteration.

    Stops when the Rayleigh quotient changes by less than ``tol`` (relative) between iterations.
    Returns ``(eigenvalue, unit eigenvector[P])``.

    Raises:
        RuntimeError: no convergence within ``max_iter`` iterations (e.g. two eigenvalues of
            nearly equal magnitude and opposite sign); use :func:`top_eigenvalues` then.
    """
    lin = op.linear_operator() if isinstance(op, HVPOperator) else op
    x = np.random.default_rng(seed).standard_normal(lin.shape[0])
    x /= np.linalg.norm(x)
    lam = 0.0
    for _ in range(max_iter):
        y = lin.matvec(x)
        new = float(x @ y)
        ny = np.linalg.norm(y)
        if ny == 0:
            return 0.0, x
        x = y / ny
        if abs(new - lam) <= tol * max(abs(new), 1e-300):
            return new, x
        lam = new
    raise RuntimeError(f"power iteration did not reach relative tolerance {tol} in {max_iter} iterations "
                       f"(last estimate {lam:.6g}); use top_eigenvalues (Lanczos) instead")
