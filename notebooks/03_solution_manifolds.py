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
# # Solution manifolds: Reptile converges towards the point nearest all solution sets
#
# Section 5.2 of the paper gives a second, informal picture of Reptile. Let $W_\tau$ be the set of
# optimal parameters of task $\tau$ and $P_{W_\tau}(\phi)$ the point of $W_\tau$ closest to
# $\phi$. Consider
#
# $$\min_\phi \; E_\tau\left[\tfrac12 D(\phi, W_\tau)^2\right], \qquad
# \nabla = E_\tau[\phi - P_{W_\tau}(\phi)],$$
#
# whose stochastic gradient step is $\phi \leftarrow \phi + \epsilon\,(P_{W_\tau}(\phi) - \phi)$.
# Reptile is exactly this step with $P_{W_\tau}(\phi)$ replaced by the end of $k$ gradient steps
# from $\phi$.
#
# Least-squares tasks make this exact: for an underdetermined linear regression
# $W_\tau = \{w : A_\tau w = y_\tau\}$ is an affine subspace, and gradient descent from $\phi$
# converges to exactly $P_{W_\tau}(\phi)$. So with $k \to \infty$ Reptile *is* SGD on the expected
# squared distance, while joint training minimizes the expected loss — a different point. In two
# dimensions, with one example per task, every $W_\tau$ is a line and we can draw everything.

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

# %%
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
    print(f"task {i}: {a[0]:+.2f} w1 {a[1]:+.2f} w2 = {t.targets.item():+.2f}   |a|^2 = {a @ a:.2f}")

# %% [markdown]
# ## Projections
#
# `AffineSubspace.project` gives $P_W(\phi)$ in closed form; `analysis.manifolds.solution_projection`
# does the same for any task (exactly for least squares, by running the optimizer to convergence
# otherwise). Two minimizers have closed forms here: the point nearest all lines on average
# (`ls_distance_minimizer`) and the joint-training minimizer (`ls_joint_minimizer`). They differ
# because joint training weights each task's squared distance by $|a_\tau|^2$.

# %%
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

fig, axes = plt.subplots(1, 1, figsize=(3.6, 3.4), squeeze=False, layout="constrained")
ax = axes[0][0]
draw_lines(ax)
ax.plot(*phi_start.numpy(), "ko", ms=4, label=r"$\phi$")
for q in proj:
    ax.annotate("", q.numpy(), phi_start.numpy(), arrowprops=dict(arrowstyle="->", color="#555555", lw=0.8))
ax.plot(*w_dist, "*", color=COLORS["reptile"], ms=10, label=r"argmin $E[D^2/2]$")
ax.plot(*w_joint, "P", color=COLORS["joint"], ms=8, label="argmin E[loss] (joint)")
ax.set_title(r"solution sets $W_\tau$ and projections $P_{W_\tau}(\phi)$")
ax.legend(fontsize=6.5, loc="lower left")
plt.show()

# %% [markdown]
# ## Reptile and joint training, as trajectories
#
# To see where each algorithm goes without the noise of sampling one task per step, we take the
# *expected* update: every outer iteration runs the engine's inner loop (`reptile.inner.adapt`,
# $k$ full-batch SGD steps of size $\alpha$) on each of the five tasks and moves $\phi$ by the
# average of $\tilde\phi_\tau - \phi$ (outer step $\epsilon = 1$). This is batched Reptile with
# the whole task distribution in the meta-batch; `reptile.train.MetaTrainer` runs the stochastic
# version, which fluctuates around the same points. With $k = 1$ the update is
# $-\alpha \bar g_1$: joint training. "$k = \infty$" replaces $\tilde\phi_\tau$ by the exact
# projection $P_{W_\tau}(\phi)$.
#
# `ls_reptile_fixed_point(tasks, k, alpha)` gives where Reptile with $k$ steps comes to rest in
# closed form: the joint minimizer for $k = 1$, the distance minimizer as $k \to \infty$.

# %%
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
    print(f"{label:30s} ends at {path[-1].round(4)}   closed-form fixed point {np.asarray(fp).round(4)}")

# %%
colors = [COLORS["joint"], *plt.cm.Greens(np.linspace(0.45, 0.95, 3))]
fig, axes = plt.subplots(1, 2, figsize=(PAGE, 3.3), squeeze=False, layout="constrained")
ax = axes[0][0]
draw_lines(ax)
for (label, (k, path)), c in zip(runs.items(), colors):
    ax.plot(path[:, 0], path[:, 1], "-", marker=".", ms=2, color=c, lw=0.9, label=label)
ax.plot(*w_dist, "*", color=COLORS["reptile"], ms=11, label=r"argmin $E[D^2/2]$", zorder=5)
ax.plot(*w_joint, "P", color="#333333", ms=8, label="argmin E[loss]", zorder=5)
ax.plot(*phi_start.numpy(), "ko", ms=4)
ax.set_title("expected-update trajectories from $\phi$")
ax.legend(fontsize=6, loc="lower left")
zoom = ax.inset_axes([0.58, 0.62, 0.4, 0.36])   # the end points, enlarged
for (label, (k, path)), c in zip(runs.items(), colors):
    zoom.plot(path[:, 0], path[:, 1], "-", marker=".", ms=3, color=c, lw=0.9)
zoom.plot(*w_dist, "*", color=COLORS["reptile"], ms=9, zorder=5)
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
ax.set_ylabel(r"$E[D^2/2] - \min E[D^2/2]$")
ax.set_title("excess expected squared distance")
ax.legend(fontsize=6.5)
plt.show()

pd.DataFrame({label: {"distance to argmin E[D^2/2]": float(np.linalg.norm(path[-1] - w_dist)),
                      "distance to argmin E[loss]": float(np.linalg.norm(path[-1] - w_joint)),
                      "E[D^2/2] at the end": M.ls_distance_objective(tasks, path[-1]),
                      "E[loss] at the end": M.ls_joint_loss(tasks, path[-1])}
              for label, (k, path) in runs.items()}).T.round(4)

# %% [markdown]
# Joint training (Reptile with one step) ends at the joint minimizer; as $k$ grows the fixed point
# slides along a curve to the point nearest all the solution lines, the minimizer of the expected
# squared distance, as section 5.2 says. The right panel shows it from the other side: only the
# projection version drives the excess distance to zero; each finite $k$ levels off at its own
# fixed point, and joint training, which minimizes the loss instead, levels off highest.
#
# ## In more dimensions: how close is k-step SGD to the projection?
#
# With $d = 10$ and 5 examples per task, $W_\tau$ is a 5-dimensional affine subspace. For one task,
# `reptile_vs_projection` compares Reptile's update $\tilde\phi_k - \phi$ with the projection step
# $P_{W_\tau}(\phi) - \phi$ as $k$ grows.

# %%
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
pd.DataFrame([c.__dict__ for c in cmp]).set_index("k").round(4)

# %% [markdown]
# The cosine between the two updates tends to 1 and the relative error to 0: with enough inner
# steps Reptile's update *is* the projection step. For nonlinear networks the solution sets are
# curved and only reached approximately, which is why the paper calls this argument informal — but
# the figure `python -m figures.solution_manifolds` and the tests in `tests/` check how far it
# carries.

# %% [markdown]
# ## On a network: a certified projection
#
# For a network the solution set of a task is curved, and the end point of a descent from $\phi$
# (what L-BFGS on the task loss returns) is *a* fitting point, not the nearest one. The toolkit
# projects by solving the constrained problem
# $\min_\theta \|\theta - \phi\|^2$ subject to $f_\theta(x_i) = y_i$ on the task's points
# (`analysis.manifolds.certified_projection`: Gauss-Newton restoration onto the set, then Newton's
# method *along* the set), and returns a certificate: the constraint violation and the KKT residual
# (the share of $\theta - \phi$ outside the row space of the Jacobian $J$; zero at a projection).
#
# The blog's sine MLP (1-64-64-1 tanh, 4353 parameters) at its seeded initialization, and one unseen
# task on 10 equally spaced points of $[-5, 5]$:

# %%
from analysis.manifold_nets import probe_tasks, sine_setup, update_vs_projection

mlp_loss, mlp_phi, _ = sine_setup(0)
mlp_phi = {k: v.double() for k, v in mlp_phi.items()}
data = probe_tasks(1, seed=7)[0]
cmp = M.compare_with_lbfgs(mlp_loss, mlp_phi, data, lbfgs_options=dict(gtol=1e-9, max_iter=1500))
c = cmp.certified.certificate
pd.DataFrame({
    "certified projection": {"distance |theta - phi|": f"{cmp.certified.distance:.4f}",
                             "max |f - y|": f"{c.violation:.1e}", "KKT residual": f"{c.kkt_residual:.1e}",
                             "certified": c.certified},
    "L-BFGS end point": {"distance |theta - phi|": f"{cmp.lbfgs.distance:.4f}",
                         "max |f - y|": f"{cmp.lbfgs_certificate.violation:.1e}",
                         "KKT residual": f"{cmp.lbfgs_certificate.kkt_residual:.1e}",
                         "certified": cmp.lbfgs_certificate.certified},
}).T

# %% [markdown]
# Both points fit the task, but the L-BFGS end point lies several times farther from $\phi$ and its
# KKT residual is of order one: it is not a projection, and a distance read off it is only an upper
# bound on $D(\phi, W_\tau)$.
#
# ## Reptile's update against the projection step, on the MLP
#
# On least squares, $k$ gradient steps from $\phi$ converge to $P_{W_\tau}(\phi)$. On the MLP they
# converge to a fitting point too, but which one? The cosine between $\tilde\phi_k - \phi$ (full-batch
# gradient descent on the same 10 points, $\alpha = 0.01$) and $P_{W_\tau}(\phi) - \phi$:

# %%
ks = [1, 3, 10, 30, 100, 300, 1000]
proj, res = update_vs_projection(mlp_loss, mlp_phi, data, 0.01, ks)
tab = pd.DataFrame([r.__dict__ for r in res]).set_index("k")
fig, axes = plt.subplots(1, 1, figsize=(3.4, 2.4), squeeze=False, layout="constrained")
axes[0][0].semilogx(tab.index, tab.cosine, "o-", color=COLORS["reptile"])
axes[0][0].set_xlabel("inner steps k"); axes[0][0].set_ylabel(r"cos($\tilde\phi_k - \phi$, $P(\phi) - \phi$)")
axes[0][0].set_title("sine MLP, one task, 10 points")
plt.show()
tab.round(4)

# %% [markdown]
# The cosine rises with $k$ but stays far from 1: gradient descent on a network heads for a fitting
# point in a direction that is only partly the projection's. So on networks "Reptile approximates SGD
# on $E[D^2/2]$" holds only loosely; `reptile verify --full` and `python -m figures.solution_manifolds`
# measure the consequence the paper cares about, the expected squared distance from the meta-learned
# initializations to unseen tasks' solution sets (docs/manifolds.md has the numbers).
#
# A small version here: the random initialization against a short Reptile run (300 iterations, the
# blog's settings) on 4 unseen tasks. The tasks' distances differ a lot (amplitudes 0.1 to 5), so the
# comparison that can see an effect is the *paired* one: the difference of $D^2$ on the same task.

# %%
from analysis.manifold_nets import evaluate_initializations, train_initializations

f32_loss, f32_phi, sampler = sine_setup(0)
runs = train_initializations(f32_loss, f32_phi, sampler, ["reptile"], iterations=300)
summary, _ = evaluate_initializations(f32_loss, {"random": f32_phi, "reptile": runs["reptile"][0]},
                                      probe_tasks(4, seed=11))
pd.DataFrame(summary).set_index("init")[["mean_sq", "ci95", "certified", "paired_vs_random",
                                         "paired_vs_random_ci95"]].round(3)

# %% [markdown]
# After 300 iterations the paired difference is small against its interval: the distances move
# slowly. The longer runs (1500 iterations per algorithm, 12 tasks) are in docs/manifolds.md.
