// A drawing cell: a canvas that records strokes from mouse, pen or touch (pointer events).
// Strokes are kept as points in [0, 1] x [0, 1] (fractions of the cell), so the display size
// does not matter; raster.js turns them into the network's 28x28 input.

const INK = "#111";
const ERASER_RADIUS = 0.05;

export class DrawingCell {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onChange?: (cell: DrawingCell) => void, getTool?: () => "pen" | "eraser"}} opts
   */
  constructor(canvas, { onChange = () => {}, getTool = () => "pen" } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.strokes = [];
    this.current = null;
    this.onChange = onChange;
    this.getTool = getTool;
    this.erasing = false;
    canvas.style.touchAction = "none";
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    canvas.addEventListener("pointercancel", (e) => this.up(e));
    canvas.addEventListener("lostpointercapture", (e) => this.up(e));
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  point(e) {
    const r = this.canvas.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)),
            Math.min(1, Math.max(0, (e.clientY - r.top) / r.height))];
  }

  down(e) {
    if (e.button !== 0 && e.pointerType === "mouse") return;
    e.preventDefault();
    this.canvas.setPointerCapture?.(e.pointerId);
    if (this.getTool() === "eraser") {
      this.erasing = true;
      this.eraseAt(this.point(e));
      return;
    }
    this.current = [this.point(e)];
    this.strokes.push(this.current);
    this.render();
  }

  move(e) {
    if (this.erasing) {
      this.eraseAt(this.point(e));
      return;
    }
    if (!this.current) return;
    e.preventDefault();
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) this.current.push(this.point(ev));
    this.render();
  }

  up() {
    if (this.erasing) {
      this.erasing = false;
      this.onChange(this);
      return;
    }
    if (!this.current) return;
    this.current = null;
    this.onChange(this);
  }

  eraseAt([x, y]) {
    const before = this.strokes.length;
    this.strokes = this.strokes.filter((s) => !s.some(([px, py]) => (px - x) ** 2 + (py - y) ** 2 < ERASER_RADIUS ** 2));
    if (this.strokes.length !== before) this.render();
  }

  isEmpty() { return this.strokes.length === 0; }

  clear() {
    this.strokes = [];
    this.current = null;
    this.render();
    this.onChange(this);
  }

  undo() {
    if (!this.strokes.length) return;
    this.strokes.pop();
    this.render();
    this.onChange(this);
  }

  /** Replace the drawing with a copy of `strokes`. */
  setStrokes(strokes) {
    this.strokes = strokes.map((s) => s.map((p) => p.slice()));
    this.current = null;
    this.render();
    this.onChange(this);
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.render();
  }

  render() {
    const { ctx, canvas } = this;
    const W = canvas.width, H = canvas.height;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);
    ctx.strokeStyle = INK;
    ctx.fillStyle = INK;
    ctx.lineWidth = Math.max(2, 0.035 * W);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    for (const s of this.strokes) {
      if (s.length === 1) {
        ctx.beginPath();
        ctx.arc(s[0][0] * W, s[0][1] * H, ctx.lineWidth / 2, 0, 2 * Math.PI);
        ctx.fill();
        continue;
      }
      ctx.beginPath();
      ctx.moveTo(s[0][0] * W, s[0][1] * H);
      for (let i = 1; i < s.length; i++) ctx.lineTo(s[i][0] * W, s[i][1] * H);
      ctx.stroke();
    }
  }
}

/** Paint a size x size image (1 = white, 0 = black) onto a canvas of that many pixels. */
export function paintImage(canvas, img, size = 28) {
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  const data = ctx.createImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    const v = Math.round(255 * Math.min(1, Math.max(0, img[i])));
    data.data[4 * i] = v;
    data.data[4 * i + 1] = v;
    data.data[4 * i + 2] = v;
    data.data[4 * i + 3] = 255;
  }
  ctx.putImageData(data, 0, 0);
}
