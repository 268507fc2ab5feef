// Reading and checking the demo's weights files (written by `reptile export-demo`).
//
// Format (version 1), a JSON object:
//   format   "reptile-lab-demo-weights"
//   version  1
//   kind     "fewshot" (OmniglotCNN, 3-way, batch norm) or "sine" (MLP 1-...-1)
//   model    {"name": "omniglot" | "mlp", "kwargs": {...}}   (reptile.models.model_spec)
//   finetune fewshot: {"optimizer": "adam", "lr", "beta1", "beta2", "eps", "steps"}
//            sine:    {"optimizer": "sgd", "lr", "record": [0, 8, 16, 32]}
//   params   {name: {"shape": [...], "dtype": "float32", "b64": base64 of little-endian float32}}
//   init     same layout as params: a random initialization of the same network
//   source   free-form provenance (checkpoint name, iteration, training config)

export const FORMAT = "reptile-lab-demo-weights";
export const VERSION = 1;

export class WeightsError extends Error {}

function fail(where, msg) {
  throw new WeightsError(`${where}: ${msg}`);
}

function decodeBase64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

/** Decode one tensor entry into {shape, data: Float64Array}. */
export function decodeTensor(entry, where) {
  if (!entry || typeof entry !== "object") fail(where, "tensor entry is not an object");
  const { shape } = entry;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
    fail(where, `shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  const n = shape.reduce((a, b) => a * b, 1);
  let data;
  if (typeof entry.b64 === "string") {
    if ((entry.dtype ?? "float32") !== "float32") fail(where, `unsupported dtype ${JSON.stringify(entry.dtype)}`);
    let bytes;
    try {
      bytes = decodeBase64(entry.b64);
    } catch (e) {
      fail(where, "b64 is not valid base64");
    }
    if (bytes.length !== 4 * n) fail(where, `holds ${bytes.length} bytes but shape [${shape}] needs ${4 * n} (${n} float32 values)`);
    const view = new DataView(bytes.buffer);
    data = new Float64Array(n);
    for (let i = 0; i < n; i++) data[i] = view.getFloat32(4 * i, true);
  } else if (Array.isArray(entry.data)) {
    if (entry.data.length !== n) fail(where, `holds ${entry.data.length} values but shape [${shape}] needs ${n}`);
    if (!entry.data.every((v) => typeof v === "number")) fail(where, "data must hold numbers only (NaN or infinite values are not allowed)");
    data = Float64Array.from(entry.data);
  } else {
    fail(where, "needs \"b64\" (base64 float32) or \"data\" (list of numbers)");
  }
  for (let i = 0; i < n; i++) if (!Number.isFinite(data[i])) fail(where, "contains NaN or infinite values");
  return { shape: shape.slice(), data };
}

/** The parameter names and shapes the demo's networks need, from the model spec. */
export function expectedShapes(kind, model) {
  const kw = model.kwargs ?? {};
  if (kind === "fewshot") {
    if (model.name !== "omniglot") fail("model", `the few-shot panel needs an "omniglot" CNN, got ${JSON.stringify(model.name)}`);
    const f = kw.filters, ways = kw.n_way;
    if (!Number.isInteger(f) || f < 1) fail("model.kwargs.filters", "must be a positive integer");
    if (ways !== 3) fail("model.kwargs.n_way", `the page has three classes; need a 3-way model, got ${ways}`);
    if ((kw.in_channels ?? 1) !== 1) fail("model.kwargs.in_channels", "must be 1 (greyscale drawings)");
    if ((kw.image_size ?? 28) !== 28) fail("model.kwargs.image_size", "must be 28");
    if ((kw.norm ?? "batch") !== "batch") fail("model.kwargs.norm", `must be "batch", got ${JSON.stringify(kw.norm)}`);
    const shapes = {};
    let c = 1;
    for (let i = 0; i < 4; i++) {
      shapes[`features.${i}.0.weight`] = [f, c, 3, 3];
      shapes[`features.${i}.0.bias`] = [f];
      shapes[`features.${i}.1.weight`] = [f];
      shapes[`features.${i}.1.bias`] = [f];
      c = f;
    }
    shapes["classifier.weight"] = [ways, 4 * f];
    shapes["classifier.bias"] = [ways];
    return shapes;
  }
  if (kind === "sine") {
    if (model.name !== "mlp") fail("model", `the sine panel needs an "mlp", got ${JSON.stringify(model.name)}`);
    const sizes = kw.sizes;
    if (!Array.isArray(sizes) || sizes.length < 2 || !sizes.every((s) => Number.isInteger(s) && s >= 1)) {
      fail("model.kwargs.sizes", "must be a list of at least two positive widths");
    }
    if (sizes[0] !== 1 || sizes[sizes.length - 1] !== 1) fail("model.kwargs.sizes", `must start and end with 1, got [${sizes}]`);
    if (!["tanh", "relu"].includes(kw.activation)) fail("model.kwargs.activation", `must be "tanh" or "relu", got ${JSON.stringify(kw.activation)}`);
    const shapes = {};
    for (let i = 0; i + 1 < sizes.length; i++) {
      shapes[`net.${2 * i}.weight`] = [sizes[i + 1], sizes[i]];
      shapes[`net.${2 * i}.bias`] = [sizes[i + 1]];
    }
    return shapes;
  }
  return fail("kind", `must be "fewshot" or "sine", got ${JSON.stringify(kind)}`);
}

function decodeParams(obj, shapes, where) {
  if (!obj || typeof obj !== "object") fail(where, "missing (a map from parameter name to tensor)");
  const out = {};
  for (const [name, shape] of Object.entries(shapes)) {
    if (!(name in obj)) fail(where, `parameter ${name} is missing`);
    const t = decodeTensor(obj[name], `${where}.${name}`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      fail(`${where}.${name}`, `has shape [${t.shape}], the model needs [${shape}]`);
    }
    out[name] = t;
  }
  for (const name of Object.keys(obj)) if (!(name in shapes)) fail(where, `unexpected parameter ${name}`);
  return out;
}

function positive(x, where) {
  if (typeof x !== "number" || !(x > 0) || !Number.isFinite(x)) fail(where, `must be a positive number, got ${JSON.stringify(x)}`);
  return x;
}

function checkFinetune(kind, ft) {
  if (!ft || typeof ft !== "object") fail("finetune", "missing");
  if (kind === "fewshot") {
    if (!["adam", "sgd"].includes(ft.optimizer)) fail("finetune.optimizer", `must be "adam" or "sgd", got ${JSON.stringify(ft.optimizer)}`);
    const out = { optimizer: ft.optimizer, lr: positive(ft.lr, "finetune.lr"), steps: ft.steps };
    if (!Number.isInteger(ft.steps) || ft.steps < 1) fail("finetune.steps", "must be a positive integer");
    if (ft.optimizer === "adam") {
      out.beta1 = ft.beta1 ?? 0;
      out.beta2 = ft.beta2 ?? 0.999;
      out.eps = ft.eps ?? 1e-8;
      if (!(out.beta1 >= 0 && out.beta1 < 1)) fail("finetune.beta1", "must be in [0, 1)");
      if (!(out.beta2 >= 0 && out.beta2 < 1)) fail("finetune.beta2", "must be in [0, 1)");
      positive(out.eps, "finetune.eps");
    }
    return out;
  }
  if (ft.optimizer !== "sgd") fail("finetune.optimizer", `must be "sgd", got ${JSON.stringify(ft.optimizer)}`);
  const rec = ft.record;
  if (!Array.isArray(rec) || rec.length === 0 || !rec.every((s) => Number.isInteger(s) && s >= 0)) {
    fail("finetune.record", "must be a list of step counts like [0, 8, 16, 32]");
  }
  return { optimizer: "sgd", lr: positive(ft.lr, "finetune.lr"), record: rec.slice().sort((a, b) => a - b) };
}

/**
 * Parse and check a weights file. `input` is the file's text or an already parsed object;
 * `expectedKind` ("fewshot" or "sine") is what the panel needs. Throws WeightsError with a
 * message that names the offending field.
 */
export function parseWeights(input, expectedKind) {
  let obj = input;
  if (typeof input === "string") {
    try {
      obj = JSON.parse(input);
    } catch (e) {
      throw new WeightsError(`not valid JSON (${e.message})`);
    }
  }
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) throw new WeightsError("not a JSON object");
  if (obj.format !== FORMAT) fail("format", `expected ${JSON.stringify(FORMAT)}, got ${JSON.stringify(obj.format)}; export weights with \`reptile export-demo\``);
  if (obj.version !== VERSION) fail("version", `this page reads version ${VERSION}, the file is version ${JSON.stringify(obj.version)}`);
  if (expectedKind && obj.kind !== expectedKind) fail("kind", `this panel needs "${expectedKind}" weights, the file holds ${JSON.stringify(obj.kind)}`);
  if (!obj.model || typeof obj.model !== "object") fail("model", "missing");
  const shapes = expectedShapes(obj.kind, obj.model);
  return {
    kind: obj.kind,
    model: { name: obj.model.name, kwargs: { ...obj.model.kwargs } },
    finetune: checkFinetune(obj.kind, obj.finetune),
    params: decodeParams(obj.params, shapes, "params"),
    init: decodeParams(obj.init, shapes, "init"),
    source: obj.source ?? {},
  };
}
