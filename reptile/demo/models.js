// The demo's two networks and their fine-tuning, on top of nn.js. Mirrors reptile.models
// (OmniglotCNN, MLP) and reptile.inner (SGD, Adam) so the parity tests can compare with torch.
//
// A parameter set is {name: {shape, data: Float64Array}} with PyTorch's parameter names.

import {
  Tensor, backward, batchNorm2d, conv2d, crossEntropy, flatten, linear, mse, relu, softmax, tanh,
} from "./nn.js";

export const IMAGE = 28;
export const BN_EPS = 1e-3;

/** Copy a parameter set (fresh Float64Arrays). */
export function cloneParams(p) {
  const out = {};
  for (const [k, v] of Object.entries(p)) out[k] = { shape: v.shape.slice(), data: Float64Array.from(v.data) };
  return out;
}

function leaves(p, requiresGrad) {
  const out = {};
  for (const [k, v] of Object.entries(p)) out[k] = new Tensor(v.data, v.shape, requiresGrad);
  return out;
}

/**
 * OmniglotCNN forward: 4 x [conv 3x3 stride 2 pad 1 -> batch norm (batch statistics) -> ReLU]
 * -> flatten -> linear. `x` is a Tensor [N, 1, 28, 28]; returns logits [N, n_way].
 */
export function omniglotLogits(T, x) {
  let h = x;
  for (let i = 0; ; i++) {
    const w = T[`features.${i}.0.weight`];
    if (!w) break;
    h = conv2d(h, w, T[`features.${i}.0.bias`], 2, 1);
    h = batchNorm2d(h, T[`features.${i}.1.weight`], T[`features.${i}.1.bias`], BN_EPS);
    h = relu(h);
  }
  return linear(flatten(h), T["classifier.weight"], T["classifier.bias"]);
}

/** MLP forward: linear layers net.0, net.2, ... with `activation` between them. x: [N, 1]. */
export function mlpOutput(T, x, activation = "tanh") {
  const act = activation === "relu" ? relu : tanh;
  let h = x;
  for (let i = 0; ; i += 2) {
    const w = T[`net.${i}.weight`];
    if (!w) break;
    if (i > 0) h = act(h);
    h = linear(h, w, T[`net.${i}.bias`]);
  }
  return h;
}

/** Stack images (each a length-784 array, ink 0 / background 1) into a Tensor [N, 1, 28, 28]. */
export function imageBatch(images) {
  const n = IMAGE * IMAGE;
  const data = new Float64Array(images.length * n);
  images.forEach((img, i) => {
    if (img.length !== n) throw new Error(`image ${i} has ${img.length} pixels, expected ${n}`);
    data.set(img, i * n);
  });
  return new Tensor(data, [images.length, 1, IMAGE, IMAGE]);
}

/** Loss and gradients of the few-shot CNN on (images, labels). */
export function fewshotLossAndGrads(params, images, labels) {
  const T = leaves(params, true);
  const loss = crossEntropy(omniglotLogits(T, imageBatch(images)), labels);
  backward(loss);
  const grads = {};
  for (const [k, t] of Object.entries(T)) grads[k] = t.grad ?? new Float64Array(t.size);
  return { loss: loss.data[0], grads };
}

/** Softmax probabilities [N * n_way] of the few-shot CNN on one batch (batch-norm statistics of that batch). */
export function fewshotProbs(params, images) {
  const logits = omniglotLogits(leaves(params, false), imageBatch(images));
  return { probs: softmax(logits), ways: logits.shape[1], logits: logits.data };
}

/** Loss and gradients of the MLP with MSE on points (xs, ys). */
export function sineLossAndGrads(params, xs, ys, activation = "tanh") {
  const T = leaves(params, true);
  const out = mlpOutput(T, new Tensor(Float64Array.from(xs), [xs.length, 1]), activation);
  const loss = mse(out, ys);
  backward(loss);
  const grads = {};
  for (const [k, t] of Object.entries(T)) grads[k] = t.grad ?? new Float64Array(t.size);
  return { loss: loss.data[0], grads };
}

/** MLP predictions at `xs` (plain array). */
export function sinePredict(params, xs, activation = "tanh") {
  return Array.from(mlpOutput(leaves(params, false), new Tensor(Float64Array.from(xs), [xs.length, 1]), activation).data);
}

/** reptile.inner.SGD: p <- p - lr * g. Returns a new parameter set. */
export function sgdStep(params, grads, lr) {
  const out = {};
  for (const [k, v] of Object.entries(params)) {
    const g = grads[k], d = new Float64Array(v.data.length);
    for (let i = 0; i < d.length; i++) d[i] = v.data[i] - lr * g[i];
    out[k] = { shape: v.shape, data: d };
  }
  return out;
}

/** Fresh Adam state (zero moments, t = 0). */
export function adamInit(params) {
  const m = {}, v = {};
  for (const [k, p] of Object.entries(params)) { m[k] = new Float64Array(p.data.length); v[k] = new Float64Array(p.data.length); }
  return { m, v, t: 0 };
}

/**
 * reptile.inner.Adam (torch.optim.Adam's update): m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
 * p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). Returns [params, state].
 */
export function adamStep(params, grads, state, { lr, beta1 = 0, beta2 = 0.999, eps = 1e-8 }) {
  const t = state.t + 1;
  const c1 = 1 - beta1 ** t, c2 = 1 - beta2 ** t;
  const out = {}, m = {}, v = {};
  for (const [k, p] of Object.entries(params)) {
    const g = grads[k], n = p.data.length;
    const mk = new Float64Array(n), vk = new Float64Array(n), d = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      mk[i] = beta1 * state.m[k][i] + (1 - beta1) * g[i];
      vk[i] = beta2 * state.v[k][i] + (1 - beta2) * g[i] * g[i];
      d[i] = p.data[i] - lr * (mk[i] / c1) / (Math.sqrt(vk[i] / c2) + eps);
    }
    out[k] = { shape: p.shape, data: d };
    m[k] = mk;
    v[k] = vk;
  }
  return [out, { m, v, t }];
}

/**
 * Few-shot fine-tuning as in the paper's non-transductive evaluation: `steps` optimizer steps
 * on the full batch of training drawings (labels 0..n-1), then one forward pass on the
 * training drawings plus the query, so batch norm uses the statistics of all of them; the
 * query's row gives its class probabilities.
 *
 * @param params parameter set to start from (not modified)
 * @param train training images (length-784 arrays), one per class, in class order
 * @param query the query image
 * @param ft {optimizer: "adam"|"sgd", lr, beta1, beta2, eps, steps}
 * @param onStep optional callback(step, loss) after each step
 * @returns {probs: number[] (query), before: number[] (query, no fine-tuning), losses: number[], params}
 */
export function finetuneFewshot(params, train, query, ft, onStep = null) {
  const labels = train.map((_, i) => i);
  const withQuery = [...train, query];
  const queryRow = (p) => {
    const { probs, ways } = fewshotProbs(p, withQuery);
    return Array.from(probs.slice(train.length * ways, (train.length + 1) * ways));
  };
  const before = queryRow(params);
  let p = params;
  let state = ft.optimizer === "adam" ? adamInit(params) : null;
  const losses = [];
  for (let s = 0; s < ft.steps; s++) {
    const { loss, grads } = fewshotLossAndGrads(p, train, labels);
    losses.push(loss);
    if (ft.optimizer === "adam") [p, state] = adamStep(p, grads, state, ft);
    else p = sgdStep(p, grads, ft.lr);
    if (onStep) onStep(s + 1, loss);
  }
  return { probs: queryRow(p), before, losses, params: p };
}

/**
 * Sine fine-tuning: full-batch SGD at `ft.lr` on the clicked points; the MLP's predictions on
 * `grid` after each step count in `ft.record` (e.g. 0, 8, 16, 32).
 * @returns {curves: {[step]: number[]}, losses: number[] (loss before each step)}
 */
export function finetuneSine(params, xs, ys, ft, grid, activation = "tanh") {
  const curves = {};
  const losses = [];
  const last = Math.max(...ft.record);
  let p = params;
  for (let s = 0; s <= last; s++) {
    if (ft.record.includes(s)) curves[s] = sinePredict(p, grid, activation);
    if (s === last || xs.length === 0) continue;
    const { loss, grads } = sineLossAndGrads(p, xs, ys, activation);
    losses.push(loss);
    p = sgdStep(p, grads, ft.lr);
  }
  for (const s of ft.record) if (!(s in curves)) curves[s] = curves[0];
  return { curves, losses };
}
