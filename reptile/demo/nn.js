// A small reverse-mode autodiff for exactly the layers of the demo's two networks:
// conv 3x3 (stride 2, padding 1), batch norm with batch statistics, ReLU, tanh, linear,
// softmax cross-entropy and mean squared error. Plain ES module, no dependencies; runs in a
// browser, a web worker and node (the parity tests import it). Float64 throughout.
//
// Conventions follow PyTorch: images are NCHW, a conv weight is [out, in, kh, kw], a linear
// weight is [out, in], flatten(1) of NCHW is channel-major, batch norm normalizes with the
// biased variance of the batch, and losses are means over the batch.

export class Tensor {
  /**
   * @param {Float64Array} data values, row-major
   * @param {number[]} shape
   * @param {boolean} requiresGrad whether backward() should compute this tensor's gradient
   */
  constructor(data, shape, requiresGrad = false) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) {
      throw new Error(`tensor data has ${data.length} values but shape [${shape}] needs ${n}`);
    }
    this.data = data;
    this.shape = shape.slice();
    this.requiresGrad = requiresGrad;
    this.grad = null;
    this.parents = [];
    this.backwardFn = null;
  }

  get size() { return this.data.length; }

  static zeros(shape, requiresGrad = false) {
    return new Tensor(new Float64Array(shape.reduce((a, b) => a * b, 1)), shape, requiresGrad);
  }

  static from(values, shape, requiresGrad = false) {
    return new Tensor(Float64Array.from(values), shape, requiresGrad);
  }

  /** Add `g` into this tensor's gradient (allocated on first use). */
  accumulate(g) {
    if (!this.grad) this.grad = new Float64Array(this.data.length);
    const d = this.grad;
    for (let i = 0; i < d.length; i++) d[i] += g[i];
  }
}

// Create the output of an op; it needs a gradient iff one of its inputs does.
function result(data, shape, parents, backwardFn) {
  const out = new Tensor(data, shape, parents.some((p) => p.requiresGrad));
  if (out.requiresGrad) {
    out.parents = parents;
    out.backwardFn = backwardFn;
  }
  return out;
}

/**
 * Reverse-mode sweep from a scalar `loss`: fills `.grad` of every tensor with requiresGrad
 * that the loss depends on. Gradients are accumulated, so use fresh leaves per call.
 */
export function backward(loss) {
  if (loss.size !== 1) throw new Error("backward() needs a scalar loss");
  const order = [];
  const seen = new Set();
  const visit = (t) => {
    if (seen.has(t) || !t.requiresGrad) return;
    seen.add(t);
    for (const p of t.parents) visit(p);
    order.push(t);
  };
  visit(loss);
  loss.grad = new Float64Array([1]);
  for (let i = order.length - 1; i >= 0; i--) {
    const t = order[i];
    if (t.backwardFn && t.grad) t.backwardFn(t.grad);
  }
}

/** conv2d with a 3x3 (any odd k) kernel, `stride`, zero `padding`: x[N,C,H,W], w[O,C,k,k], b[O]. */
export function conv2d(x, w, b, stride = 2, padding = 1) {
  const [N, C, H, W] = x.shape;
  const [O, C2, KH, KW] = w.shape;
  if (C2 !== C) throw new Error(`conv2d: input has ${C} channels, weight expects ${C2}`);
  if (b.shape.length !== 1 || b.shape[0] !== O) throw new Error(`conv2d: bias must be [${O}]`);
  const Ho = Math.floor((H + 2 * padding - KH) / stride) + 1;
  const Wo = Math.floor((W + 2 * padding - KW) / stride) + 1;
  const xd = x.data, wd = w.data, bd = b.data;
  const out = new Float64Array(N * O * Ho * Wo);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const obase = (n * O + o) * Ho * Wo;
      for (let i = 0; i < Ho * Wo; i++) out[obase + i] = bd[o];
      for (let c = 0; c < C; c++) {
        const xbase = (n * C + c) * H * W;
        const wbase = (o * C + c) * KH * KW;
        for (let ky = 0; ky < KH; ky++) {
          for (let kx = 0; kx < KW; kx++) {
            const wv = wd[wbase + ky * KW + kx];
            for (let oy = 0; oy < Ho; oy++) {
              const iy = oy * stride - padding + ky;
              if (iy < 0 || iy >= H) continue;
              const xrow = xbase + iy * W;
              const orow = obase + oy * Wo;
              for (let ox = 0; ox < Wo; ox++) {
                const ix = ox * stride - padding + kx;
                if (ix < 0 || ix >= W) continue;
                out[orow + ox] += wv * xd[xrow + ix];
              }
            }
          }
        }
      }
    }
  }
  return result(out, [N, O, Ho, Wo], [x, w, b], (g) => {
    const gw = w.requiresGrad ? new Float64Array(wd.length) : null;
    const gb = b.requiresGrad ? new Float64Array(O) : null;
    const gx = x.requiresGrad ? new Float64Array(xd.length) : null;
    for (let n = 0; n < N; n++) {
      for (let o = 0; o < O; o++) {
        const obase = (n * O + o) * Ho * Wo;
        if (gb) for (let i = 0; i < Ho * Wo; i++) gb[o] += g[obase + i];
        for (let c = 0; c < C; c++) {
          const xbase = (n * C + c) * H * W;
          const wbase = (o * C + c) * KH * KW;
          for (let ky = 0; ky < KH; ky++) {
            for (let kx = 0; kx < KW; kx++) {
              const wi = wbase + ky * KW + kx;
              const wv = wd[wi];
              let acc = 0;
              for (let oy = 0; oy < Ho; oy++) {
                const iy = oy * stride - padding + ky;
                if (iy < 0 || iy >= H) continue;
                const xrow = xbase + iy * W;
                const orow = obase + oy * Wo;
                for (let ox = 0; ox < Wo; ox++) {
                  const ix = ox * stride - padding + kx;
                  if (ix < 0 || ix >= W) continue;
                  const go = g[orow + ox];
                  acc += go * xd[xrow + ix];
                  if (gx) gx[xrow + ix] += go * wv;
                }
              }
              if (gw) gw[wi] += acc;
            }
          }
        }
      }
    }
    if (gx) x.accumulate(gx);
    if (gw) w.accumulate(gw);
    if (gb) b.accumulate(gb);
  });
}

/**
 * Batch norm over (N, H, W) per channel with the batch's own statistics (biased variance),
 * then the affine map gamma * xhat + beta: x[N,C,H,W], gamma[C], beta[C].
 */
export function batchNorm2d(x, gamma, beta, eps = 1e-3) {
  const [N, C, H, W] = x.shape;
  const HW = H * W, M = N * HW;
  const xd = x.data;
  const mean = new Float64Array(C), invStd = new Float64Array(C);
  const xhat = new Float64Array(xd.length), out = new Float64Array(xd.length);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) {
      const base = (n * C + c) * HW;
      for (let i = 0; i < HW; i++) s += xd[base + i];
    }
    const mu = s / M;
    let v = 0;
    for (let n = 0; n < N; n++) {
      const base = (n * C + c) * HW;
      for (let i = 0; i < HW; i++) { const d = xd[base + i] - mu; v += d * d; }
    }
    mean[c] = mu;
    invStd[c] = 1 / Math.sqrt(v / M + eps);
    const gm = gamma.data[c], bt = beta.data[c];
    for (let n = 0; n < N; n++) {
      const base = (n * C + c) * HW;
      for (let i = 0; i < HW; i++) {
        const xh = (xd[base + i] - mu) * invStd[c];
        xhat[base + i] = xh;
        out[base + i] = gm * xh + bt;
      }
    }
  }
  return result(out, x.shape, [x, gamma, beta], (g) => {
    const gg = new Float64Array(C), gbt = new Float64Array(C);
    const gx = x.requiresGrad ? new Float64Array(xd.length) : null;
    for (let c = 0; c < C; c++) {
      let sg = 0, sgx = 0;
      for (let n = 0; n < N; n++) {
        const base = (n * C + c) * HW;
        for (let i = 0; i < HW; i++) { sg += g[base + i]; sgx += g[base + i] * xhat[base + i]; }
      }
      gg[c] = sgx;
      gbt[c] = sg;
      if (gx) {
        // dx = gamma * invStd / M * (M * g - sum(g) - xhat * sum(g * xhat))
        const k = gamma.data[c] * invStd[c] / M;
        for (let n = 0; n < N; n++) {
          const base = (n * C + c) * HW;
          for (let i = 0; i < HW; i++) gx[base + i] = k * (M * g[base + i] - sg - xhat[base + i] * sgx);
        }
      }
    }
    if (gx) x.accumulate(gx);
    if (gamma.requiresGrad) gamma.accumulate(gg);
    if (beta.requiresGrad) beta.accumulate(gbt);
  });
}

export function relu(x) {
  const xd = x.data, out = new Float64Array(xd.length);
  for (let i = 0; i < xd.length; i++) out[i] = xd[i] > 0 ? xd[i] : 0;
  return result(out, x.shape, [x], (g) => {
    const gx = new Float64Array(xd.length);
    for (let i = 0; i < xd.length; i++) gx[i] = xd[i] > 0 ? g[i] : 0;
    x.accumulate(gx);
  });
}

export function tanh(x) {
  const xd = x.data, out = new Float64Array(xd.length);
  for (let i = 0; i < xd.length; i++) out[i] = Math.tanh(xd[i]);
  return result(out, x.shape, [x], (g) => {
    const gx = new Float64Array(xd.length);
    for (let i = 0; i < xd.length; i++) gx[i] = g[i] * (1 - out[i] * out[i]);
    x.accumulate(gx);
  });
}

/** Reshape to [N, rest] (PyTorch's flatten(1) of a contiguous tensor). */
export function flatten(x) {
  const N = x.shape[0];
  return result(x.data, [N, x.size / N], [x], (g) => x.accumulate(g));
}

/** y = x w^T + b: x[N,I], w[O,I], b[O] -> [N,O]. */
export function linear(x, w, b) {
  const [N, I] = x.shape;
  const [O, I2] = w.shape;
  if (I !== I2) throw new Error(`linear: input has ${I} features, weight expects ${I2}`);
  if (b.shape.length !== 1 || b.shape[0] !== O) throw new Error(`linear: bias must be [${O}]`);
  const xd = x.data, wd = w.data, bd = b.data;
  const out = new Float64Array(N * O);
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      let s = bd[o];
      const xb = n * I, wb = o * I;
      for (let i = 0; i < I; i++) s += xd[xb + i] * wd[wb + i];
      out[n * O + o] = s;
    }
  }
  return result(out, [N, O], [x, w, b], (g) => {
    if (x.requiresGrad) {
      const gx = new Float64Array(xd.length);
      for (let n = 0; n < N; n++) {
        for (let o = 0; o < O; o++) {
          const go = g[n * O + o];
          if (go === 0) continue;
          const xb = n * I, wb = o * I;
          for (let i = 0; i < I; i++) gx[xb + i] += go * wd[wb + i];
        }
      }
      x.accumulate(gx);
    }
    if (w.requiresGrad) {
      const gw = new Float64Array(wd.length);
      for (let n = 0; n < N; n++) {
        for (let o = 0; o < O; o++) {
          const go = g[n * O + o];
          if (go === 0) continue;
          const xb = n * I, wb = o * I;
          for (let i = 0; i < I; i++) gw[wb + i] += go * xd[xb + i];
        }
      }
      w.accumulate(gw);
    }
    if (b.requiresGrad) {
      const gb = new Float64Array(O);
      for (let n = 0; n < N; n++) for (let o = 0; o < O; o++) gb[o] += g[n * O + o];
      b.accumulate(gb);
    }
  });
}

/** Row-wise softmax of logits [N, K] as a plain Float64Array (no gradient). */
export function softmax(logits) {
  const [N, K] = logits.shape;
  const z = logits.data, p = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let k = 0; k < K; k++) m = Math.max(m, z[n * K + k]);
    let s = 0;
    for (let k = 0; k < K; k++) { p[n * K + k] = Math.exp(z[n * K + k] - m); s += p[n * K + k]; }
    for (let k = 0; k < K; k++) p[n * K + k] /= s;
  }
  return p;
}

/** Mean cross-entropy of logits [N, K] against integer labels (array of N). */
export function crossEntropy(logits, labels) {
  const [N, K] = logits.shape;
  if (labels.length !== N) throw new Error(`crossEntropy: ${N} logit rows but ${labels.length} labels`);
  const p = softmax(logits);
  let loss = 0;
  for (let n = 0; n < N; n++) {
    const y = labels[n];
    if (!(Number.isInteger(y) && y >= 0 && y < K)) throw new Error(`crossEntropy: label ${y} not in 0..${K - 1}`);
    loss -= Math.log(p[n * K + y]);
  }
  return result(new Float64Array([loss / N]), [], [logits], (g) => {
    const gl = new Float64Array(N * K);
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) gl[n * K + k] = g[0] * (p[n * K + k] - (k === labels[n] ? 1 : 0)) / N;
    }
    logits.accumulate(gl);
  });
}

/** Mean squared error mean((out - y)^2); `target` is an array-like shaped like `out`. */
export function mse(out, target) {
  if (target.length !== out.size) throw new Error(`mse: ${out.size} outputs but ${target.length} targets`);
  const od = out.data;
  let s = 0;
  for (let i = 0; i < od.length; i++) { const d = od[i] - target[i]; s += d * d; }
  const M = od.length;
  return result(new Float64Array([s / M]), [], [out], (g) => {
    const go = new Float64Array(M);
    for (let i = 0; i < M; i++) go[i] = g[0] * 2 * (od[i] - target[i]) / M;
    out.accumulate(go);
  });
}
