# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The Taylor expansion of the meta-gradients, step by step
#
# Section 5.1 of *On First-Order Meta-Learning Algorithms* (Nichol, Achiam, Schulman, 2018)
# explains why Reptile works by expanding every meta-gradient in powers of the inner step size
# $\alpha$. For one task with minibatch losses $L_1, \dots, L_k$ and SGD
# $\phi_{i+1} = \phi_i - \alpha g_i$, write
#
# * $g_i = L_i'(\phi_i)$ — the gradients SGD actually sees,
# * $\bar g_i = L_i'(\phi_1)$ — the same minibatch's gradient at the starting point,
# * $\bar H_i = L_i''(\phi_1)$ — its Hessian at the starting point.
#
# Then $g_i = \bar g_i - \alpha \bar H_i \sum_{j<i} \bar g_j + O(\alpha^2)$, and
#
# $$g_{\text{MAML}} = \bar g_k - \alpha \bar H_k \sum_{j<k}\bar g_j - \alpha \sum_{j<k} \bar H_j \bar g_k + O(\alpha^2),\qquad
# g_{\text{FOMAML}} = \bar g_k - \alpha \bar H_k \sum_{j<k}\bar g_j + O(\alpha^2),$$
# $$g_{\text{Reptile}} = \sum_{i\le k}\bar g_i - \alpha \sum_{i\le k}\sum_{j<i} \bar H_i \bar g_j + O(\alpha^2).$$
#
# This notebook builds every piece by hand on one sine-wave task — the $\bar g_i$, the
# Hessian-vector products, the predictions — checks them against `analysis.taylor`, and then
# verifies the claim itself: the residual (measured minus predicted) shrinks like $\alpha^2$.

# %%
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
import numpy as np
import pandas as pd
import torch
import matplotlib.pyplot as plt
torch.set_num_threads(1)
# %matplotlib inline
# the project's algorithm colours and names (as in figures/style.py), for the legends
COLORS = {"maml": "#D55E00", "fomaml": "#0072B2", "reptile": "#009E73", "joint": "#7F7F7F"}
NAMES = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile", "joint": "Joint training"}
PAGE = 7.0  # inches: a page-wide figure

# %% [markdown]
# ## One task, k minibatches
#
# A small tanh MLP on the paper's sine waves, in float64 (float32 rounding would hide the
# $\alpha^2$ slope below $\alpha \approx 10^{-3}$). The task gives $k = 3$ minibatches of 10
# points; MAML and FOMAML "with k" take $k-1$ steps and use the $k$-th minibatch for the outer
# loss, Reptile takes $k$ steps.

# %%
from torch.func import grad
from reptile.models import MLP
from reptile.losses import make_loss, params_of
from reptile.tasks import SineTaskDistribution
from reptile import tree

torch.manual_seed(0)
model = MLP((1, 32, 32, 1), "tanh").double()
loss_fn = make_loss(model, "mse")
phi = params_of(model)

rng = np.random.default_rng(0)
task = SineTaskDistribution(dtype=torch.float64).sample(rng)
k = 3
batches = task.minibatches(k, 10, rng, "replacement")   # x[k, 10, 1], y[k, 10, 1]
print(f"task: {task.amplitude:.2f} sin(x + {task.phase:.2f});  batches: {tuple(batches[0].shape)};  "
      f"parameters: {tree.numel(phi)}")
minibatch = lambda i: (batches[0][i], batches[1][i])

# %% [markdown]
# ## Step 1: the gradients at the starting point, $\bar g_i$
#
# All taken at $\phi_1$. Their inner products already say something: $\bar g_i \cdot \bar g_j$ for
# $i \ne j$ is the within-task alignment that Reptile and MAML increase (notebook 2).

# %%
gbar = [grad(loss_fn)(phi, minibatch(i)) for i in range(k)]
G = torch.stack([tree.flatten(g) for g in gbar])
pd.DataFrame((G @ G.T).numpy(), index=[f"gbar_{i+1}" for i in range(k)],
             columns=[f"gbar_{j+1}" for j in range(k)]).round(3)

# %% [markdown]
# ## Step 2: Hessian-vector products, and what SGD actually sees
#
# `analysis.hvp(loss_fn, phi, batch, v)` gives $\bar H v$ without forming the Hessian (forward over
# reverse mode). With it we predict each SGD gradient $g_i$ to first order and compare with the
# real ones from the engine's inner loop (`reptile.inner.adapt(..., keep=True)`).

# %%
import analysis
from reptile.inner import SGD, adapt

alpha = 0.01
traj = adapt(loss_fn, phi, batches, SGD(alpha), keep=True)      # the real g_1..g_k
rows = []
for i in range(k):
    s_i = tree.zeros_like(phi)
    for j in range(i):
        s_i = tree.add(s_i, gbar[j])
    first = tree.sub(gbar[i], tree.scale(analysis.hvp(loss_fn, phi, minibatch(i), s_i), alpha))
    g_i = traj.grads[i]
    rows.append({"i": i + 1, "|g_i|": float(tree.norm(g_i)),
                 "|g_i - gbar_i| (order 0)": float(tree.norm(tree.sub(g_i, gbar[i]))),
                 "|g_i - (gbar_i - alpha Hbar_i s_i)| (order 1)": float(tree.norm(tree.sub(g_i, first)))})
pd.DataFrame(rows).set_index("i")


# %% [markdown]
# $g_1 = \bar g_1$ exactly. For later steps the zeroth-order error is $O(\alpha)$ and the first-order
# correction removes most of it, leaving $O(\alpha^2)$.
#
# ## Step 3: predicted and measured meta-gradients
#
# The three predictions, written out from the formulas above with the HVPs of step 2 …

# %%
def hv(i, v):
    return analysis.hvp(loss_fn, phi, minibatch(i), v)

def total(trees):
    out = tree.zeros_like(phi)
    for t in trees:
        out = tree.add(out, t)
    return out

last = k - 1
s_last = total(gbar[:last])
fomaml_pred = tree.sub(gbar[last], tree.scale(hv(last, s_last), alpha))
maml_pred = tree.sub(fomaml_pred, tree.scale(total(hv(j, gbar[last]) for j in range(last)), alpha))
reptile_pred = tree.sub(total(gbar), tree.scale(total(hv(i, total(gbar[:i])) for i in range(1, k)), alpha))
by_hand = {"maml": maml_pred, "fomaml": fomaml_pred, "reptile": reptile_pred}

# %% [markdown]
# … against the library's `analysis.taylor.leading_order`, and against the exact meta-gradients
# (`reptile.algorithms.meta_gradient`: MAML differentiates through the inner loop with
# `torch.func.grad`).

# %%
from reptile.algorithms import meta_gradient

library = analysis.taylor.leading_order(loss_fn, phi, batches, alpha)
rows = []
for name in ("maml", "fomaml", "reptile"):
    exact = meta_gradient(name, loss_fn, phi, batches, alpha)
    zeroth = gbar[last] if name != "reptile" else total(gbar)
    rows.append({"algorithm": name,
                 "|by hand - library|": float(tree.norm(tree.sub(by_hand[name], library[name]))),
                 "|exact|": float(tree.norm(exact)),
                 "|exact - order 0|": float(tree.norm(tree.sub(exact, zeroth))),
                 "|exact - order 1| (residual)": float(tree.norm(tree.sub(exact, by_hand[name])))})
pd.DataFrame(rows).set_index("algorithm")

# %% [markdown]
# The hand-built predictions equal the library's to rounding, and the residual of the first-order
# prediction is much smaller than the first-order term itself.
#
# ## Step 4: the residual shrinks like $\alpha^2$
#
# If the expansion is right, halving $\alpha$ divides the residual by four: on a log-log plot its
# slope is 2 for small $\alpha$ ("small" meaning $\alpha k \|\bar H\|$ small). The zeroth-order
# residual, for contrast, has slope 1. `analysis.taylor.alpha_sweep` also measures the
# second-order prediction (slope 3).

# %%
alphas = np.logspace(-4, -0.5, 10)
sweep = analysis.taylor.alpha_sweep(loss_fn, phi, batches, alphas, orders=(0, 1, 2), fit_range=(0, 1e-2))
fig, axes = plt.subplots(1, 3, figsize=(PAGE, 2.5), squeeze=False, layout="constrained", sharey=True)
for ax, name in zip(axes[0], ("maml", "fomaml", "reptile")):
    for order, ls in ((0, ":"), (1, "-"), (2, "--")):
        g = sweep[(sweep.algorithm == name) & (sweep.order == order)]
        ax.loglog(g.alpha, g.residual, ls, marker="o", ms=2.5, color=COLORS[name],
                  alpha=[0.45, 1.0, 0.7][order], label=f"order {order}: slope {g.slope.iloc[0]:.2f}")
    ax.set_title(f"{NAMES[name]} (k={k})")
    ax.set_xlabel(r"inner step size $\alpha$")
    ax.legend(fontsize=6.5)
axes[0][0].set_ylabel("|measured - predicted|")
plt.show()
analysis.taylor.slopes(sweep)

# %% [markdown]
# The fitted slopes (on $\alpha \le 10^{-2}$) come out close to 1, 2 and 3 for orders 0, 1 and 2:
# the paper's expansion is right where it claims to be. At the large-$\alpha$ end the curves bend
# up: there $\alpha k$ is no longer small and the neglected terms take over; the point where the
# first-order prediction's relative error passes 10% is what `analysis.taylor.breakdown` reports.

# %%
analysis.taylor.breakdown(sweep, threshold=0.1)

# %% [markdown]
# **Take-away.** For one task and one set of minibatches, every meta-gradient is, to first order,
# a sum of minibatch gradients at the start plus $\alpha$ times Hessian-vector products
# $\bar H_i \bar g_j$. In expectation over tasks and minibatches those products become
# AvgGradInner $= \tfrac12 \nabla E[\bar g_1 \cdot \bar g_2]$ — the term that makes meta-learning
# different from joint training (the figure `python -m figures.coefficients` measures its
# coefficients, notebook 2 its effect).
