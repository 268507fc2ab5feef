// The page: drawing cells, sine plots, and the conversation with the fine-tuning worker.
// Panels expose their state for tests and assistive tools: section[data-state] is one of
// loading | error | waiting | running | done; result[data-probs] holds the query's
// probabilities as JSON; canvas.plot[data-curves] the number of curves drawn.

import { DrawingCell, paintImage } from "./draw.js";
import { rasterize } from "./raster.js";
import { SinePlot, STEP_COLORS, X_RANGE } from "./plot.js";

const $ = (sel, root = document) => root.querySelector(sel);
const CLASS_COLORS = ["#1b9e77", "#d95f02", "#7570b3"];
const NAMES = ["1", "2", "3", "query"];

// ---------------------------------------------------------------------------- worker
let worker;
const handlers = { fewshot: null, sine: null };
const panels = { fewshot: $("#fewshot"), sine: $("#sine") };
const statusOf = { fewshot: $("#fewshot-status"), sine: $("#sine-status") };

function setState(kind, state, message) {
  panels[kind].dataset.state = state;
  if (message !== undefined) statusOf[kind].textContent = message;
  statusOf[kind].classList.toggle("error", state === "error");
}

function startWorker() {
  try {
    worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  } catch (e) {
    for (const k of ["fewshot", "sine"]) setState(k, "error", `This browser cannot start the fine-tuning worker (module workers): ${e.message}`);
    return false;
  }
  worker.onerror = (e) => {
    for (const k of ["fewshot", "sine"]) setState(k, "error", `The fine-tuning worker failed: ${e.message || "could not load worker.js"}`);
  };
  worker.onmessage = ({ data }) => {
    if (data.type === "loaded") handlers[data.kind]?.loaded(data.info);
    else if (data.type === "error") {
      if (data.kind === "fewshot" || data.kind === "sine") handlers[data.kind]?.error(data.message, data.id);
      else for (const k of ["fewshot", "sine"]) setState(k, "error", data.message);
    } else handlers[data.type]?.result(data);
  };
  return true;
}

async function loadWeights(kind) {
  const url = `weights/${kind}.json`;
  const hint = `Export weights with \`reptile export-demo CHECKPOINT --kind ${kind} --out DIR/${kind}.json\` and start the page with \`reptile demo --weights-dir DIR\`.`;
  let res;
  try {
    res = await fetch(url, { cache: "no-cache" });
  } catch (e) {
    setState(kind, "error", `Could not fetch ${url}: ${e.message}. ${hint}`);
    return;
  }
  if (!res.ok) {
    setState(kind, "error", `Could not load the weights file ${url} (HTTP ${res.status}${res.status === 404 ? ": missing" : ""}). ${hint}`);
    return;
  }
  const text = await res.text();
  handlers[kind].url = url;
  worker.postMessage({ type: "load", kind, text });
}

function fmtOptimizer(ft) {
  if (ft.optimizer === "adam") return `Adam (β1 = ${ft.beta1}, β2 = ${ft.beta2}), learning rate ${ft.lr}`;
  return `SGD, learning rate ${ft.lr}`;
}

function describeSource(info) {
  const s = info.source || {};
  const parts = [];
  if (s.family) parts.push(`trained on the ${s.family} family`);
  if (s.iteration != null) parts.push(`${s.iteration} outer iterations`);
  if (s.checkpoint) parts.push(`checkpoint ${s.checkpoint}`);
  return parts.join(", ");
}

// ---------------------------------------------------------------------------- few-shot panel
const fewshot = (() => {
  let ready = false, id = 0, timer = null, tool = "pen", ft = null;
  const cells = [];
  const previews = [];
  const images = [null, null, null, null];
  const stepsInput = $("#fewshot-steps"), stepsOut = $("#fewshot-steps-value");
  const template = $("#cell-template");
  const container = $("#cells");

  NAMES.forEach((name, i) => {
    const node = template.content.firstElementChild.cloneNode(true);
    node.dataset.index = String(i);
    node.classList.toggle("query", i === 3);
    $("figcaption", node).textContent = i === 3 ? "Query" : `Class ${name}`;
    if (i < 3) $("figcaption", node).style.borderColor = CLASS_COLORS[i];
    const canvas = $("canvas.draw", node);
    canvas.setAttribute("aria-label", i === 3 ? "Query drawing" : `Drawing of class ${name}`);
    canvas.id = `cell-${i}`;
    if (i === 3) $('[data-action="copy"]', node).remove();
    container.appendChild(node);
    const cell = new DrawingCell(canvas, { onChange: () => changed(i), getTool: () => tool });
    cells.push(cell);
    previews.push($("canvas.preview", node));
    node.addEventListener("click", (e) => {
      const action = e.target.closest("button")?.dataset.action;
      if (action === "erase") cell.clear();
      else if (action === "undo") cell.undo();
      else if (action === "copy") cells[3].setStrokes(cell.strokes);
    });
    changed(i, false);
  });

  for (const [btn, t] of [[$("#tool-pen"), "pen"], [$("#tool-eraser"), "eraser"]]) {
    btn.addEventListener("click", () => {
      tool = t;
      $("#tool-pen").setAttribute("aria-pressed", String(t === "pen"));
      $("#tool-eraser").setAttribute("aria-pressed", String(t === "eraser"));
      container.classList.toggle("erasing", t === "eraser");
    });
  }
  $("#fewshot-erase-all").addEventListener("click", () => cells.forEach((c) => c.clear()));
  stepsInput.addEventListener("input", () => {
    stepsOut.textContent = stepsInput.value;
    schedule();
  });

  function changed(i, run = true) {
    images[i] = cells[i].isEmpty() ? null : rasterize(cells[i].strokes);
    paintImage(previews[i], images[i] ?? new Float64Array(784).fill(1));
    if (run) schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(run, 80);
  }

  function clearResults() {
    for (const sel of ["#result-meta", "#result-random"]) {
      const r = $(sel);
      $(".bars", r).replaceChildren();
      $(".detail", r).textContent = "";
      delete r.dataset.probs;
      delete r.dataset.predicted;
    }
  }

  function run() {
    if (!ready) return;
    const missing = images.map((img, i) => (img ? null : i === 3 ? "the query" : `class ${i + 1}`)).filter(Boolean);
    if (missing.length) {
      id++; // drop any result still on its way
      clearResults();
      setState("fewshot", "waiting", `Draw ${missing.join(", ").replace(/, ([^,]*)$/, " and $1")} to see the prediction.`);
      return;
    }
    id++;
    setState("fewshot", "running", "Fine-tuning…");
    worker.postMessage({ type: "fewshot", id, train: images.slice(0, 3), query: images[3], steps: Number(stepsInput.value) });
  }

  function bars(el, probs) {
    const best = probs.indexOf(Math.max(...probs));
    const rows = probs.map((p, k) => {
      const row = document.createElement("div");
      row.className = "bar-row" + (k === best ? " best" : "");
      const thumb = document.createElement("canvas");
      thumb.className = "thumb";
      paintImage(thumb, images[k]);
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = `Class ${k + 1}`;
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.width = `${(100 * p).toFixed(2)}%`;
      fill.style.background = CLASS_COLORS[k];
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = `${(100 * p).toFixed(1)}%`;
      row.append(thumb, label, track, value);
      row.setAttribute("aria-label", `class ${k + 1}: ${(100 * p).toFixed(1)} percent`);
      return row;
    });
    el.replaceChildren(...rows);
    return best;
  }

  function show(sel, r) {
    const el = $(sel);
    const best = bars($(".bars", el), r.probs);
    el.dataset.probs = JSON.stringify(r.probs);
    el.dataset.predicted = String(best);
    const pct = (ps) => ps.map((p) => `${(100 * p).toFixed(0)}%`).join(" / ");
    const loss = r.losses.length ? ` Training loss ${r.losses[0].toFixed(3)} at the first step, ${r.losses[r.losses.length - 1].toFixed(3)} at the last.` : "";
    $(".detail", el).textContent = `Before fine-tuning: ${pct(r.before)}.${loss}`;
  }

  return {
    loaded(info) {
      ft = info.finetune;
      ready = true;
      stepsInput.value = String(ft.steps);
      stepsOut.textContent = String(ft.steps);
      const kw = info.model.kwargs;
      $("#fewshot-info").textContent = `Network: ${kw.n_way}-way CNN, 4 conv blocks of ${kw.filters} filters with batch norm `
        + `(statistics of the 3 drawings while fine-tuning, of the 3 drawings plus the query when predicting), `
        + `${info.parameters} parameters; ${describeSource(info)}. Fine-tuning: ${fmtOptimizer(ft)}, full batch of the three drawings.`;
      setState("fewshot", "waiting", "");
      run();
    },
    error(message, msgId) {
      if (msgId !== undefined && msgId !== id) return;
      ready = ready && msgId !== undefined;
      clearResults();
      setState("fewshot", "error", msgId === undefined ? `The few-shot weights file ${this.url ?? ""} is unusable: ${message}` : message);
    },
    result(r) {
      if (r.id !== id) return;
      show("#result-meta", r.meta);
      show("#result-random", r.random);
      setState("fewshot", "done", `Fine-tuned both networks for ${r.steps} step${r.steps === 1 ? "" : "s"} in ${r.ms.toFixed(0)} ms.`);
    },
    cells,
  };
})();
handlers.fewshot = fewshot;

// ---------------------------------------------------------------------------- sine panel
const sine = (() => {
  let ready = false, id = 0, record = [0, 8, 16, 32];
  const points = [];
  const grid = Array.from({ length: 201 }, (_, i) => X_RANGE[0] + (i * (X_RANGE[1] - X_RANGE[0])) / 200);
  const plots = [$("#sine-meta"), $("#sine-random")].map((c) => new SinePlot(c, { onClick: add }));
  let truth = null;

  function add(x, y) {
    points.push([x, y]);
    run();
  }

  function legend() {
    const items = record.map((s, i) => [`${s} steps`, STEP_COLORS[Math.min(i, STEP_COLORS.length - 1)], "line"]);
    if (truth) items.push(["true function", "#d95f02", "dash"]);
    items.push(["your points", "#d62728", "dot"]);
    $("#sine-legend").replaceChildren(...items.map(([text, color, style]) => {
      const s = document.createElement("span");
      s.className = `key ${style}`;
      const sw = document.createElement("i");
      sw.style.borderColor = color;
      sw.style.background = style === "dot" ? color : "transparent";
      s.append(sw, text);
      return s;
    }));
  }

  function run() {
    for (const p of plots) {
      p.points = points;
      p.truth = truth;
      p.render();
    }
    if (!ready) return;
    id++;
    setState("sine", "running", "Fine-tuning…");
    worker.postMessage({ type: "sine", id, xs: points.map((p) => p[0]), ys: points.map((p) => p[1]), grid });
  }

  $("#sine-clear").addEventListener("click", () => {
    points.length = 0;
    truth = null;
    legend();
    run();
  });
  $("#sine-undo").addEventListener("click", () => {
    points.pop();
    run();
  });
  $("#sine-sample").addEventListener("click", () => {
    const a = 0.1 + 4.9 * Math.random(), b = 2 * Math.PI * Math.random();
    truth = [grid, grid.map((x) => a * Math.sin(x + b))];
    points.length = 0;
    for (let i = 0; i < 10; i++) {
      const x = X_RANGE[0] + (X_RANGE[1] - X_RANGE[0]) * Math.random();
      points.push([x, a * Math.sin(x + b)]);
    }
    legend();
    run();
  });
  legend();

  const mse = (curve) => {
    if (!truth) return null;
    let s = 0;
    for (let i = 0; i < grid.length; i++) s += (curve[i] - truth[1][i]) ** 2;
    return s / grid.length;
  };

  return {
    loaded(info) {
      ready = true;
      record = info.finetune.record;
      const kw = info.model.kwargs;
      $("#sine-info").textContent = `Network: MLP ${kw.sizes.join("-")} with ${kw.activation}, ${info.parameters} parameters; `
        + `${describeSource(info)}. Fine-tuning: ${fmtOptimizer(info.finetune)}, full batch of your points.`;
      legend();
      run();
    },
    error(message, msgId) {
      if (msgId !== undefined && msgId !== id) return;
      ready = ready && msgId !== undefined;
      setState("sine", "error", msgId === undefined ? `The sine weights file ${this.url ?? ""} is unusable: ${message}` : message);
    },
    result(r) {
      if (r.id !== id) return;
      const last = r.record[r.record.length - 1];
      [r.meta, r.random].forEach((res, i) => {
        plots[i].curves = { grid, curves: res.curves, record: r.record };
        plots[i].render();
        plots[i].canvas.dataset.curves = String(r.record.length);
        plots[i].canvas.dataset.points = String(points.length);
      });
      let msg;
      if (!points.length) msg = `Click in a plot to add points. The curves are the two initializations' predictions.`;
      else {
        const fit = (res) => (res.losses.length ? res.losses[res.losses.length - 1] : NaN);
        msg = `Fine-tuned on ${points.length} point${points.length === 1 ? "" : "s"} in ${r.ms.toFixed(0)} ms.`;
        const em = mse(r.meta.curves[last]), er = mse(r.random.curves[last]);
        if (em !== null) msg += ` Error against the true function after ${last} steps: ${em.toFixed(3)} (Reptile) vs ${er.toFixed(3)} (random).`;
        else msg += ` Loss on your points before the last step: ${fit(r.meta).toFixed(3)} (Reptile) vs ${fit(r.random).toFixed(3)} (random).`;
      }
      setState("sine", "done", msg);
    },
  };
})();
handlers.sine = sine;

// ---------------------------------------------------------------------------- start
if (startWorker()) {
  loadWeights("fewshot");
  loadWeights("sine");
}
window.reptileDemo = { fewshot, sine };
