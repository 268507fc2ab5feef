// Runs the demo's JavaScript on reference inputs written by tests/test_demo_parity.py and writes
// its results, so the test can compare them with torch.
//   node tests/js/parity.mjs IN.json OUT.json
import { readFileSync, writeFileSync } from "node:fs";
import { parseWeights } from "../../reptile/demo/weights.js";
import {
  fewshotLossAndGrads, fewshotProbs, finetuneFewshot, finetuneSine, sineLossAndGrads, sinePredict,
} from "../../reptile/demo/models.js";

const [input, output] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(input, "utf8"));
const out = {};
const arr = (a) => Array.from(a);
const gradsOut = (g) => Object.fromEntries(Object.entries(g).map(([k, v]) => [k, arr(v)]));

if (spec.fewshot) {
  const f = spec.fewshot;
  const w = parseWeights(f.weights, "fewshot");
  const all = [...f.train, f.query];
  out.fewshot = {
    logits: arr(fewshotProbs(w.params, all).logits),
    ...(({ loss, grads }) => ({ loss, grads: gradsOut(grads) }))(fewshotLossAndGrads(w.params, f.train, [0, 1, 2])),
    finetune: f.finetune.map((ft) => {
      const cfg = { ...w.finetune, ...ft };
      const meta = finetuneFewshot(w.params, f.train, f.query, cfg);
      const random = finetuneFewshot(w.init, f.train, f.query, cfg);
      return { meta: { probs: meta.probs, before: meta.before, losses: meta.losses },
               random: { probs: random.probs, before: random.before, losses: random.losses } };
    }),
  };
}

if (spec.sine) {
  const s = spec.sine;
  const w = parseWeights(s.weights, "sine");
  const act = w.model.kwargs.activation;
  out.sine = {
    pred: sinePredict(w.params, s.grid, act),
    ...(({ loss, grads }) => ({ loss, grads: gradsOut(grads) }))(sineLossAndGrads(w.params, s.xs, s.ys, act)),
    meta: finetuneSine(w.params, s.xs, s.ys, w.finetune, s.grid, act),
    random: finetuneSine(w.init, s.xs, s.ys, w.finetune, s.grid, act),
  };
}

if (spec.raster) {
  const { rasterize } = await import("../../reptile/demo/raster.js");
  out.raster = spec.raster.map((strokes) => arr(rasterize(strokes)));
}

if (spec.bad) {
  // malformed weights files: each must be refused with a WeightsError naming the problem
  out.bad = spec.bad.map(({ text, kind }) => {
    try {
      parseWeights(text, kind);
      return { ok: true };
    } catch (e) {
      return { ok: false, name: e.constructor.name, message: e.message };
    }
  });
}

writeFileSync(output, JSON.stringify(out));
