// A small canvas plot for the sine panel: axes, clicked points, and the fine-tuned curves.

export const X_RANGE = [-5, 5];
export const Y_RANGE = [-6, 6];
export const STEP_COLORS = ["#9ecae1", "#4292c6", "#2171b5", "#08306b"];

export class SinePlot {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas, { onClick = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.points = [];
    this.curves = null; // {grid, curves: {step: ys}, record}
    this.truth = null; // [xs, ys]
    this.pad = { l: 34, r: 8, t: 8, b: 24 };
    canvas.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 && e.pointerType === "mouse") return;
      const [x, y] = this.toData(e);
      if (x >= X_RANGE[0] && x <= X_RANGE[1] && y >= Y_RANGE[0] && y <= Y_RANGE[1]) onClick(x, y);
    });
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    this.dpr = window.devicePixelRatio || 1;
    this.cssW = Math.max(1, r.width);
    this.cssH = Math.max(1, r.height);
    this.canvas.width = Math.round(this.cssW * this.dpr);
    this.canvas.height = Math.round(this.cssH * this.dpr);
    this.render();
  }

  sx(x) { const { l, r } = this.pad; return l + (x - X_RANGE[0]) / (X_RANGE[1] - X_RANGE[0]) * (this.cssW - l - r); }
  sy(y) { const { t, b } = this.pad; return t + (Y_RANGE[1] - y) / (Y_RANGE[1] - Y_RANGE[0]) * (this.cssH - t - b); }

  toData(e) {
    const rect = this.canvas.getBoundingClientRect();
    const px = e.clientX - rect.left, py = e.clientY - rect.top;
    const { l, r, t, b } = this.pad;
    return [X_RANGE[0] + (px - l) / (this.cssW - l - r) * (X_RANGE[1] - X_RANGE[0]),
            Y_RANGE[1] - (py - t) / (this.cssH - t - b) * (Y_RANGE[1] - Y_RANGE[0])];
  }

  polyline(xs, ys) {
    const { ctx } = this;
    ctx.beginPath();
    for (let i = 0; i < xs.length; i++) {
      const y = Math.max(Y_RANGE[0] - 2, Math.min(Y_RANGE[1] + 2, ys[i]));
      if (i === 0) ctx.moveTo(this.sx(xs[i]), this.sy(y));
      else ctx.lineTo(this.sx(xs[i]), this.sy(y));
    }
    ctx.stroke();
  }

  render() {
    const { ctx } = this;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, this.cssW, this.cssH);
    const { l, r, t, b } = this.pad;
    // grid and axes
    ctx.strokeStyle = "#eee";
    ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#666";
    ctx.textAlign = "center";
    for (let x = X_RANGE[0]; x <= X_RANGE[1]; x++) {
      ctx.beginPath(); ctx.moveTo(this.sx(x), t); ctx.lineTo(this.sx(x), this.cssH - b); ctx.stroke();
      if (x % 5 === 0) ctx.fillText(String(x), this.sx(x), this.cssH - b + 14);
    }
    ctx.textAlign = "right";
    for (let y = Y_RANGE[0]; y <= Y_RANGE[1]; y += 2) {
      ctx.beginPath(); ctx.moveTo(l, this.sy(y)); ctx.lineTo(this.cssW - r, this.sy(y)); ctx.stroke();
      ctx.fillText(String(y), l - 4, this.sy(y) + 4);
    }
    ctx.strokeStyle = "#bbb";
    ctx.beginPath(); ctx.moveTo(l, this.sy(0)); ctx.lineTo(this.cssW - r, this.sy(0)); ctx.stroke();
    ctx.save();
    ctx.beginPath();
    ctx.rect(l, t, this.cssW - l - r, this.cssH - t - b);
    ctx.clip();
    if (this.truth) {
      ctx.strokeStyle = "#d95f02";
      ctx.setLineDash([5, 4]);
      ctx.lineWidth = 1.5;
      this.polyline(this.truth[0], this.truth[1]);
      ctx.setLineDash([]);
    }
    if (this.curves) {
      const { grid, curves, record } = this.curves;
      record.forEach((step, i) => {
        ctx.strokeStyle = STEP_COLORS[Math.min(i, STEP_COLORS.length - 1)];
        ctx.lineWidth = i === record.length - 1 ? 2.5 : 1.5;
        this.polyline(grid, curves[step]);
      });
    }
    ctx.restore();
    ctx.fillStyle = "#d62728";
    ctx.strokeStyle = "#fff";
    for (const [x, y] of this.points) {
      ctx.beginPath();
      ctx.arc(this.sx(x), this.sy(y), 4.5, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }
  }
}
