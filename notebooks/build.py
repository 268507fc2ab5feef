"""Write the notebooks of this folder from the cell sources below, without outputs.

Run ``python notebooks/build.py`` after editing a cell here (the .ipynb files are generated;
edit this script, not them). The test suite executes every notebook headless
(tests/test_notebooks.py).
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import sys, pathlib
# make the repository importable when the notebook runs from notebooks/ without an install
root = pathlib.Path.cwd().resolve()
while not (root / "reptile").is_dir() and root != root.parent:
    root = root.parent
sys.path.insert(0, str(root))

import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
import numpy as np
import pandas as pd
import torch
import matplotlib
import matplotlib.pyplot as plt
from figures import style  # the project's paper-like plot style
torch.set_num_threads(1)
%matplotlib inline
"""

# --------------------------------------------------------------------------------------------
TAYLOR = [
    ("md", """\
# The Taylor expansion of the meta-gradients, step by step

Section 5.1 of *On First-Order Meta-Learning Algorithms* (Nichol, Achiam, Schulman, 2018)
explains why Reptile works by expanding every meta-gradient in powers of the inner step size
$\\alpha$. For one task with minibatch losses $L_1, \\dots, L_k$ and SGD
$\\phi_{i+1} = \\phi_i - \\alpha g_i$, write

* $g_i = L_i'(\\phi_i)$ — the gradients SGD actually sees,
* $\\bar g_i = L_i'(\\phi_1)$ — the same minibatch's gradient at the starting point,
* $\\bar H_i = L_i''(\\phi_1)$ — its Hessian at the starting point.

Then $g_i = \\bar g_i - \\alpha \\bar H_i \\sum_{j<i} \\bar g_j + O(\\alpha^2)$, and

$$g_{\\text{MAML}} = \\bar g_k - \\alpha \\bar H_k \\sum_{j<k}\\bar g_j - \\alpha \\sum_{j<k} \\bar H_j \\bar g_k + O(\\alpha^2),\\qquad
g_{\\text{FOMAML}} = \\bar g_k - \\alpha \\bar H_k \\sum_{j<k}\\bar g_j + O(\\alpha^2),$$
$$g_{\\text{Reptile}} = \\sum_{i\\le k}\\bar g_i - \\alpha \\sum_{i\\le k}\\sum_{j<i} \\bar H_i \\bar g_j + O(\\alpha^2).$$

This notebook builds every piece by hand on one sine-wave task — the $\\bar g_i$, the
Hessian-vector products, the predictions — checks them against `analysis.taylor`, and then
verifies the claim itself: the residual (measured minus predicted) shrinks like $\\alpha^2$."""),
    ("code", SETUP),
    ("md", """\
## One task, k minibatches

A small tanh MLP on the paper's sine waves, in float64 (float32 rounding would hide the
$\\alpha^2$ slope below $\\alpha \\approx 10^{-3}$). The task gives $k = 3$ minibatches of 10
points; MAML and FOMAML "with k" take $k-1$ steps and use the $k$-th minibatch for the outer
loss, Reptile takes $k$ steps."""),
    ("code", """\
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
minibatch = lambda i: (batches[0][i], batches[1][i])"""),
    ("md", """\
## Step 1: the gradients at the starting point, $\\bar g_i$

All taken at $\\phi_1$. Their inner products already say something: $\\bar g_i \\cdot \\bar g_j$ for
$i \\ne j$ is the within-task alignment that Reptile and MAML increase (notebook 2)."""),
    ("code", """\
gbar = [grad(loss_fn)(phi, minibatch(i)) for i in range(k)]
G = torch.stack([tree.flatten(g) for g in gbar])
pd.DataFrame((G @ G.T).numpy(), index=[f"gbar_{i+1}" for i in range(k)],
             columns=[f"gbar_{j+1}" for j in range(k)]).round(3)"""),
    ("md", """\
## Step 2: Hessian-vector products, and what SGD actually sees

`analysis.hvp(loss_fn, phi, batch, v)` gives $\\bar H v$ without forming the Hessian (forward over
reverse mode). With it we predict each SGD gradient $g_i$ to first order and compare with the
real ones from the engine's inner loop (`reptile.inner.adapt(..., keep=True)`)."""),
    ("code", """\
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
pd.DataFrame(rows).set_index("i")"""),
    ("md", """\
$g_1 = \\bar g_1$ exactly. For later steps the zeroth-order error is $O(\\alpha)$ and the first-order
correction removes most of it, leaving $O(\\alpha^2)$.

## Step 3: predicted and measured meta-gradients

The three predictions, written out from the formulas above with the HVPs of step 2 …"""),
    ("code", """\
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
by_hand = {"maml": maml_pred, "fomaml": fomaml_pred, "reptile": reptile_pred}"""),
    ("md", """\
… against the library's `analysis.taylor.leading_order`, and against the exact meta-gradients
(`reptile.algorithms.meta_gradient`: MAML differentiates through the inner loop with
`torch.func.grad`)."""),
    ("code", """\
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
pd.DataFrame(rows).set_index("algorithm")"""),
    ("md", """\
The hand-built predictions equal the library's to rounding, and the residual of the first-order
prediction is much smaller than the first-order term itself.

## Step 4: the residual shrinks like $\\alpha^2$

If the expansion is right, halving $\\alpha$ divides the residual by four: on a log-log plot its
slope is 2 for small $\\alpha$ ("small" meaning $\\alpha k \\|\\bar H\\|$ small). The zeroth-order
residual, for contrast, has slope 1. `analysis.taylor.alpha_sweep` also measures the
second-order prediction (slope 3)."""),
    ("code", """\
alphas = np.logspace(-4, -0.5, 10)
sweep = analysis.taylor.alpha_sweep(loss_fn, phi, batches, alphas, orders=(0, 1, 2), fit_range=(0, 1e-2))
fig, axes = style.figure(ncols=3, width=style.PAGE, height=2.5, sharey=True)
for ax, name in zip(axes[0], ("maml", "fomaml", "reptile")):
    for order, ls in ((0, ":"), (1, "-"), (2, "--")):
        g = sweep[(sweep.algorithm == name) & (sweep.order == order)]
        ax.loglog(g.alpha, g.residual, ls, marker="o", ms=2.5, color=style.color(name),
                  alpha=[0.45, 1.0, 0.7][order], label=f"order {order}: slope {g.slope.iloc[0]:.2f}")
    ax.set_title(style.label(name, k))
    ax.set_xlabel(r"inner step size $\\alpha$")
    ax.legend(fontsize=6.5)
axes[0][0].set_ylabel("|measured - predicted|")
plt.show()
analysis.taylor.slopes(sweep)"""),
    ("md", """\
The fitted slopes (on $\\alpha \\le 10^{-2}$) come out close to 1, 2 and 3 for orders 0, 1 and 2:
the paper's expansion is right where it claims to be. At the large-$\\alpha$ end the curves bend
up: there $\\alpha k$ is no longer small and the neglected terms take over; the point where the
first-order prediction's relative error passes 10% is what `analysis.taylor.breakdown` reports."""),
    ("code", """\
analysis.taylor.breakdown(sweep, threshold=0.1)"""),
    ("md", """\
**Take-away.** For one task and one set of minibatches, every meta-gradient is, to first order,
a sum of minibatch gradients at the start plus $\\alpha$ times Hessian-vector products
$\\bar H_i \\bar g_j$. In expectation over tasks and minibatches those products become
AvgGradInner $= \\tfrac12 \\nabla E[\\bar g_1 \\cdot \\bar g_2]$ — the term that makes meta-learning
different from joint training (the figure `python -m figures.coefficients` measures its
coefficients, notebook 2 its effect)."""),
]

# --------------------------------------------------------------------------------------------
ALIGNMENT = [
    ("md", """\
# Gradient alignment: why Reptile raises within-task inner products

Taking expectations of the Taylor expansion (paper section 5.1) gives, with
$\\text{AvgGrad} = E[\\bar g_1]$ and $\\text{AvgGradInner} = E[\\bar H_2 \\bar g_1] = \\tfrac12 \\nabla_\\phi E[\\bar g_1 \\cdot \\bar g_2]$:

| algorithm | coefficient of AvgGrad | coefficient of AvgGradInner |
|---|---|---|
| MAML | 1 | $-2(k-1)\\alpha$ |
| FOMAML | 1 | $-(k-1)\\alpha$ |
| Reptile | $k$ | $-k(k-1)\\alpha/2$ |

A step *against* the meta-gradient therefore moves *up* the gradient of
$E[\\bar g_1 \\cdot \\bar g_2]$: the inner product between the gradients of two different minibatches
of the same task. Large positive inner products mean that a step on one minibatch also lowers the
loss on another — the task's data "generalize" to each other, which is what fast adaptation needs.
Joint training (minimizing $E_\\tau[L_\\tau]$, the AvgGrad term alone) has no such pressure.

This notebook measures the within-task and across-task inner products before and after
meta-training with Reptile and with joint training, on sine waves."""),
    ("code", SETUP),
    ("code", """\
from reptile.models import MLP
from reptile.losses import make_loss, params_of
from reptile.tasks import SineTaskDistribution
from reptile.train import MetaTrainer, TrainConfig
from analysis.alignment import AlignmentCallback, gradient_alignment

torch.manual_seed(0)
model = MLP((1, 32, 32, 1), "tanh")
loss_fn = make_loss(model, "mse")
phi0 = params_of(model)
dist = SineTaskDistribution()
K, B = 5, 10

def sampler(rng):
    # one task, k = 5 disjoint minibatches of 10 of its 50 grid points (one epoch)
    return dist.sample(rng).minibatches(K, B, rng, "cycle")"""),
    ("md", """\
## Measuring alignment

For $n$ probe tasks with $k$ minibatch gradients $\\bar g_{t,i}$ each (all at the same $\\phi$):

* **within task**: the mean of $\\bar g_{t,i} \\cdot \\bar g_{t,j}$ over tasks and pairs $i \\ne j$ —
  the estimate of $E[\\bar g_1 \\cdot \\bar g_2]$ — and the mean cosine;
* **across tasks**: the same over pairs of minibatches from *different* tasks, the baseline.

`analysis.alignment.AlignmentCallback` draws the probe tasks once and measures these whenever the
trainer calls it."""),
    ("code", """\
probe = AlignmentCallback(loss_fn, sampler, every=50, n_tasks=12)
before = probe.measure(phi0)
pd.Series(before.as_dict(prefix="")).round(4)"""),
    ("md", """\
## Meta-training: Reptile against joint training

Same initialization, same tasks, same outer optimizer (Adam, so that only the update *direction*
differs). Reptile's update is $\\phi - \\tilde\\phi$ after $k = 5$ SGD steps; joint training's is
the gradient of the task's loss at $\\phi$ (`"joint"` in `reptile.algorithms`).
A few hundred iterations are enough to see the effect (a minute or less on one CPU core)."""),
    ("code", """\
histories, finals = {}, {}
for name in ("reptile", "joint"):
    cfg = TrainConfig(name, inner_steps=K, inner_batch=B, inner_lr=0.02, outer_optimizer="adam", outer_lr=3e-3,
                      iterations=400, log_every=10**9, checkpoint_every=10**9)
    result = MetaTrainer(loss_fn, phi0, sampler, cfg, callbacks=[probe]).run(progress=False)
    histories[name] = pd.DataFrame([{"iteration": 0, **before.as_dict()}] +
                                   [r for r in result.history if "align_within_dot" in r])
    finals[name] = result.params

fig, axes = style.figure(ncols=3, width=style.PAGE, height=2.4)
for ax, col, title in zip(axes[0], ("align_within_dot", "align_within_cos", "align_across_cos"),
                          ("within task: inner product", "within task: cosine", "across tasks: cosine")):
    for name, h in histories.items():
        ax.plot(h.iteration, h[col], marker="o", ms=2.5, color=style.color(name), label=style.label(name))
    ax.set_title(title)
    ax.set_xlabel("outer iteration")
axes[0][0].legend()
plt.show()"""),
    ("md", """\
## Before and after, side by side"""),
    ("code", """\
table = pd.DataFrame({"initialization": before.as_dict(prefix=""),
                      **{f"after {name}": probe.measure(p).as_dict(prefix="") for name, p in finals.items()}})
table.loc[["within_dot", "within_cos", "across_dot", "across_cos", "sq_norm", "within_ratio"]].round(4)"""),
    ("md", """\
Read the table with the definitions in mind: `within_cos` is the scale-free within-task
alignment and `across_cos` its baseline; `within_ratio` $= $ `within_dot` / `sq_norm` compares
the cross terms with the gradients' own size.

## Does alignment help adaptation?

Alignment is a means, not an end: what we care about is the loss after a few steps on a new
task. `reptile.evaluate.evaluate_sine` fine-tunes on 10 points of unseen sine waves for 32 SGD
steps and reports the mean squared error on the 50-point grid."""),
    ("code", """\
from reptile.evaluate import evaluate_sine

rows = []
for name, p in {"initialization": phi0, **finals}.items():
    ev = evaluate_sine(model, loss_fn, p, n_tasks=30, steps=32, record=(0, 1, 8, 32))
    rows.append({"parameters": name, **{f"MSE after {s} steps": m for s, m in zip(ev.steps, ev.mean)}})
pd.DataFrame(rows).set_index("parameters").round(3)"""),
    ("md", """\
**What to take away.** Both algorithms see the same data; only Reptile's update contains the
$-\\alpha\\, k(k-1)/2\\,$AvgGradInner term, which pushes the minibatch gradients of a task to
agree. The numbers above are measured, not assumed — run with other seeds, widths or step sizes
and check whether the ordering holds (the figure `python -m figures.alignment` does this for
MAML, FOMAML, Reptile and joint training over longer runs). The effect is small per step: it is
proportional to $\\alpha$, and it competes with the AvgGrad term, which joint training and Reptile
share."""),
]

# --------------------------------------------------------------------------------------------
MANIFOLDS = [
    ("md", """\
# Solution manifolds: Reptile converges towards the point nearest all solution sets

Section 5.2 of the paper gives a second, informal picture of Reptile. Let $W_\\tau$ be the set of
optimal parameters of task $\\tau$ and $P_{W_\\tau}(\\phi)$ the point of $W_\\tau$ closest to
$\\phi$. Consider

$$\\min_\\phi \\; E_\\tau\\left[\\tfrac12 D(\\phi, W_\\tau)^2\\right], \\qquad
\\nabla = E_\\tau[\\phi - P_{W_\\tau}(\\phi)],$$

whose stochastic gradient step is $\\phi \\leftarrow \\phi + \\epsilon\\,(P_{W_\\tau}(\\phi) - \\phi)$.
Reptile is exactly this step with $P_{W_\\tau}(\\phi)$ replaced by the end of $k$ gradient steps
from $\\phi$.

Least-squares tasks make this exact: for an underdetermined linear regression
$W_\\tau = \\{w : A_\\tau w = y_\\tau\\}$ is an affine subspace, and gradient descent from $\\phi$
converges to exactly $P_{W_\\tau}(\\phi)$. So with $k \\to \\infty$ Reptile *is* SGD on the expected
squared distance, while joint training minimizes the expected loss — a different point. In two
dimensions, with one example per task, every $W_\\tau$ is a line and we can draw everything."""),
    ("code", SETUP),
    ("code", """\
from reptile.models import LinearModel
from reptile.losses import make_loss
from reptile.tasks import LeastSquaresTaskDistribution
import analysis.manifolds as M

dist = LeastSquaresTaskDistribution(dim=2, n_points=1, mean=1.0, std=1.0)
rng = np.random.default_rng(3)
tasks = [dist.sample(rng) for _ in range(5)]          # the task distribution: uniform over these 5
sets = [t.solution_set() for t in tasks]              # W_tau: point + span(basis), a line in R^2
for i, (t, W) in enumerate(zip(tasks, sets)):
    a = t.inputs[0].numpy()
    print(f"task {i}: {a[0]:+.2f} w1 {a[1]:+.2f} w2 = {t.targets.item():+.2f}   |a|^2 = {a @ a:.2f}")"""),
    ("md", """\
## Projections

`AffineSubspace.project` gives $P_W(\\phi)$ in closed form; `analysis.manifolds.solution_projection`
does the same for any task (exactly for least squares, by running the optimizer to convergence
otherwise). Two minimizers have closed forms here: the point nearest all lines on average
(`ls_distance_minimizer`) and the joint-training minimizer (`ls_joint_minimizer`). They differ
because joint training weights each task's squared distance by $|a_\\tau|^2$."""),
    ("code", """\
w_dist = M.ls_distance_minimizer(tasks)
w_joint = M.ls_joint_minimizer(tasks)
phi_start = torch.tensor([-2.5, 3.0], dtype=torch.float64)
proj = [W.project(phi_start) for W in sets]
exact = M.solution_projection(tasks[0], phi_start)
print("P_W0(phi) by AffineSubspace.project:", proj[0].numpy(), " by analysis.manifolds:", exact.point.numpy())
print("argmin E[D^2/2] =", w_dist.round(3), "  argmin E[L] (joint) =", w_joint.round(3))

def draw_lines(ax, lim=(-4, 5)):
    t = np.linspace(-20, 20, 2)
    for i, W in enumerate(sets):
        p, d = W.point.numpy(), W.basis[:, 0].numpy()
        ax.plot(p[0] + t * d[0], p[1] + t * d[1], color="#bbbbbb", lw=1, zorder=0)
    ax.set_xlim(*lim); ax.set_ylim(*lim); ax.set_aspect("equal")
    ax.set_xlabel("$w_1$"); ax.set_ylabel("$w_2$")

fig, axes = style.figure(width=3.6, height=3.4)
ax = axes[0][0]
draw_lines(ax)
ax.plot(*phi_start.numpy(), "ko", ms=4, label=r"$\\phi$")
for q in proj:
    ax.annotate("", q.numpy(), phi_start.numpy(), arrowprops=dict(arrowstyle="->", color="#555555", lw=0.8))
ax.plot(*w_dist, "*", color=style.color("reptile"), ms=10, label=r"argmin $E[D^2/2]$")
ax.plot(*w_joint, "P", color=style.color("joint"), ms=8, label="argmin E[loss] (joint)")
ax.set_title(r"solution sets $W_\\tau$ and projections $P_{W_\\tau}(\\phi)$")
ax.legend(fontsize=6.5, loc="lower left")
plt.show()"""),
    ("md", """\
## Reptile and joint training, as trajectories

To see where each algorithm goes without the noise of sampling one task per step, we take the
*expected* update: every outer iteration runs the engine's inner loop (`reptile.inner.adapt`,
$k$ full-batch SGD steps of size $\\alpha$) on each of the five tasks and moves $\\phi$ by the
average of $\\tilde\\phi_\\tau - \\phi$ (outer step $\\epsilon = 1$). This is batched Reptile with
the whole task distribution in the meta-batch; `reptile.train.MetaTrainer` runs the stochastic
version, which fluctuates around the same points. With $k = 1$ the update is
$-\\alpha \\bar g_1$: joint training. "$k = \\infty$" replaces $\\tilde\\phi_\\tau$ by the exact
projection $P_{W_\\tau}(\\phi)$.

`ls_reptile_fixed_point(tasks, k, alpha)` gives where Reptile with $k$ steps comes to rest in
closed form: the joint minimizer for $k = 1$, the distance minimizer as $k \\to \\infty$."""),
    ("code", """\
from reptile.inner import SGD, adapt

model = LinearModel(2).double()
loss_fn = make_loss(model, "mse")
alpha = 0.4 / max(float(t.inputs[0] @ t.inputs[0]) for t in tasks)   # below 1/lambda_max: GD converges
full_batches = {}

def expected_reptile(k, iterations=120, eps=1.0):
    w = phi_start.clone()
    path = [w.numpy().copy()]
    for _ in range(iterations):
        if k is None:                              # k = infinity: the exact projections
            target = torch.stack([W.project(w) for W in sets]).mean(0)
        else:
            ends = []
            for t in tasks:
                x = t.inputs.expand(k, 1, 2); y = t.targets.expand(k, 1, 1)   # the full batch, k times
                ends.append(adapt(loss_fn, {"linear.weight": w[None]}, (x, y), SGD(alpha)).end["linear.weight"][0])
            target = torch.stack(ends).mean(0)
        w = w + eps * (target - w)
        path.append(w.numpy().copy())
    return np.array(path)

runs = {"joint training (k=1)": (1, expected_reptile(1)), "Reptile, k=3": (3, expected_reptile(3)),
        "Reptile, k=10": (10, expected_reptile(10)), "Reptile, k=inf (projections)": (None, expected_reptile(None))}
for label, (k, path) in runs.items():
    fp = w_dist if k is None else M.ls_reptile_fixed_point(tasks, k, alpha)
    print(f"{label:30s} ends at {path[-1].round(4)}   closed-form fixed point {np.asarray(fp).round(4)}")"""),
    ("code", """\
colors = [style.color("joint"), *plt.cm.Greens(np.linspace(0.45, 0.95, 3))]
fig, axes = style.figure(ncols=2, width=style.PAGE, height=3.3)
ax = axes[0][0]
draw_lines(ax)
for (label, (k, path)), c in zip(runs.items(), colors):
    ax.plot(path[:, 0], path[:, 1], "-", marker=".", ms=2, color=c, lw=0.9, label=label)
ax.plot(*w_dist, "*", color=style.color("reptile"), ms=11, label=r"argmin $E[D^2/2]$", zorder=5)
ax.plot(*w_joint, "P", color="#333333", ms=8, label="argmin E[loss]", zorder=5)
ax.plot(*phi_start.numpy(), "ko", ms=4)
ax.set_title("expected-update trajectories from $\\phi$")
ax.legend(fontsize=6, loc="lower left")
zoom = ax.inset_axes([0.58, 0.62, 0.4, 0.36])   # the end points, enlarged
for (label, (k, path)), c in zip(runs.items(), colors):
    zoom.plot(path[:, 0], path[:, 1], "-", marker=".", ms=3, color=c, lw=0.9)
zoom.plot(*w_dist, "*", color=style.color("reptile"), ms=9, zorder=5)
zoom.plot(*w_joint, "P", color="#333333", ms=7, zorder=5)
lo, hi = np.minimum(w_dist, w_joint) - 0.15, np.maximum(w_dist, w_joint) + 0.15
zoom.set_xlim(lo[0], hi[0]); zoom.set_ylim(lo[1], hi[1]); zoom.tick_params(labelsize=5)
ax.indicate_inset_zoom(zoom, edgecolor="#888888")

ax = axes[0][1]
floor = M.ls_distance_objective(tasks, w_dist)
for (label, (k, path)), c in zip(runs.items(), colors):
    d = np.array([M.ls_distance_objective(tasks, w) for w in path]) - floor
    ax.semilogy(np.maximum(d, 1e-12), color=c, label=label)
ax.set_xlabel("outer iteration")
ax.set_ylabel(r"$E[D^2/2] - \\min E[D^2/2]$")
ax.set_title("excess expected squared distance")
ax.legend(fontsize=6.5)
plt.show()

pd.DataFrame({label: {"distance to argmin E[D^2/2]": float(np.linalg.norm(path[-1] - w_dist)),
                      "distance to argmin E[loss]": float(np.linalg.norm(path[-1] - w_joint)),
                      "E[D^2/2] at the end": M.ls_distance_objective(tasks, path[-1]),
                      "E[loss] at the end": M.ls_joint_loss(tasks, path[-1])}
              for label, (k, path) in runs.items()}).T.round(4)"""),
    ("md", """\
Joint training (Reptile with one step) ends at the joint minimizer; as $k$ grows the fixed point
slides along a curve to the point nearest all the solution lines, the minimizer of the expected
squared distance, as section 5.2 says. The right panel shows it from the other side: only the
projection version drives the excess distance to zero; each finite $k$ levels off at its own
fixed point, and joint training, which minimizes the loss instead, levels off highest.

## In more dimensions: how close is k-step SGD to the projection?

With $d = 10$ and 5 examples per task, $W_\\tau$ is a 5-dimensional affine subspace. For one task,
`reptile_vs_projection` compares Reptile's update $\\tilde\\phi_k - \\phi$ with the projection step
$P_{W_\\tau}(\\phi) - \\phi$ as $k$ grows."""),
    ("code", """\
model10 = LinearModel(10).double()
loss10 = make_loss(model10, "mse")
dist10 = LeastSquaresTaskDistribution(dim=10, n_points=5)
task = dist10.sample(np.random.default_rng(0))
phi10 = {"linear.weight": torch.zeros(1, 10, dtype=torch.float64)}
P = M.solution_projection(task, phi10)
a10 = 0.5 / float(torch.linalg.matrix_norm(2 / 5 * task.inputs.T @ task.inputs, ord=2))
ks = [1, 3, 10, 30, 100, 300, 1000]
batches = task.minibatches(max(ks), 5, np.random.default_rng(1))     # full batch every step
cmp = M.reptile_vs_projection(loss10, phi10, batches, a10, ks, P.point)
pd.DataFrame([c.__dict__ for c in cmp]).set_index("k").round(4)"""),
    ("md", """\
The cosine between the two updates tends to 1 and the relative error to 0: with enough inner
steps Reptile's update *is* the projection step. For nonlinear networks the solution sets are
curved and only reached approximately, which is why the paper calls this argument informal — but
the figure `python -m figures.solution_manifolds` and the tests in `tests/` check how far it
carries."""),
]

NOTEBOOKS = {
    "01_taylor_expansion.ipynb": TAYLOR,
    "02_gradient_alignment.ipynb": ALIGNMENT,
    "03_solution_manifolds.ipynb": MANIFOLDS,
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = build(cells)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print(f"wrote {HERE / name} ({len(cells)} cells)")


if __name__ == "__main__":
    main()
