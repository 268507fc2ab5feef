// The demo's web worker: holds the two weights files and runs all fine-tuning off the page's
// main thread, so drawing and clicking stay responsive.
//
// Messages in:  {type: "load", kind, text}                      -> {type: "loaded", kind, info} | {type: "error", kind, message}
//               {type: "fewshot", id, train: [3 x 784], query: 784, steps}
//                                                               -> {type: "fewshot", id, meta, random, ms}
//               {type: "sine", id, xs, ys, grid}                -> {type: "sine", id, meta, random, record, ms}

import { parseWeights } from "./weights.js";
import { finetuneFewshot, finetuneSine } from "./models.js";

const weights = {};

function summary(w) {
  const n = Object.values(w.params).reduce((a, t) => a + t.data.length, 0);
  return { kind: w.kind, model: w.model, finetune: w.finetune, parameters: n, source: w.source };
}

function handle(msg) {
  switch (msg.type) {
    case "load": {
      try {
        weights[msg.kind] = parseWeights(msg.text, msg.kind);
      } catch (e) {
        delete weights[msg.kind];
        return { type: "error", kind: msg.kind, id: msg.id, message: e.message };
      }
      return { type: "loaded", kind: msg.kind, info: summary(weights[msg.kind]) };
    }
    case "fewshot": {
      const w = weights.fewshot;
      if (!w) return { type: "error", kind: "fewshot", id: msg.id, message: "no few-shot weights loaded" };
      const t0 = performance.now();
      const ft = { ...w.finetune, steps: msg.steps ?? w.finetune.steps };
      const meta = finetuneFewshot(w.params, msg.train, msg.query, ft);
      const random = finetuneFewshot(w.init, msg.train, msg.query, ft);
      delete meta.params;
      delete random.params;
      return { type: "fewshot", id: msg.id, meta, random, steps: ft.steps, ms: performance.now() - t0 };
    }
    case "sine": {
      const w = weights.sine;
      if (!w) return { type: "error", kind: "sine", id: msg.id, message: "no sine weights loaded" };
      const t0 = performance.now();
      const act = w.model.kwargs.activation;
      const meta = finetuneSine(w.params, msg.xs, msg.ys, w.finetune, msg.grid, act);
      const random = finetuneSine(w.init, msg.xs, msg.ys, w.finetune, msg.grid, act);
      return { type: "sine", id: msg.id, meta, random, record: w.finetune.record, ms: performance.now() - t0 };
    }
    default:
      return { type: "error", id: msg.id, message: `unknown message type ${msg.type}` };
  }
}

self.onmessage = (event) => {
  let reply;
  try {
    reply = handle(event.data);
  } catch (e) {
    reply = { type: "error", kind: event.data?.kind ?? event.data?.type, id: event.data?.id, message: `${e.message}` };
  }
  self.postMessage(reply);
};
