// Turn a drawing (strokes of points) into the 28x28 image the network sees, the way the
// training data looks: the ink's bounding box is centered and scaled so its longer side is
// `box` pixels (20 of 28, like the glyph set and MNIST), strokes are drawn `width` pixels wide
// whatever the drawing's size, and the image is ink = 0 on background = 1, anti-aliased by
// `supersample` x `supersample` coverage sampling. Pure function: no canvas, runs in node.
// width 2.8 was chosen so that 2 * ink area / total variation (a stroke-width estimate) of
// drawn shapes (2.2-2.7) matches the glyph set's (median 2.5).

export const DEFAULTS = Object.freeze({ size: 28, box: 20, width: 2.8, supersample: 4 });

/** Bounding box {minX, minY, maxX, maxY} of all points, or null if there are none. */
export function bounds(strokes) {
  let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
  for (const s of strokes) {
    for (const [x, y] of s) {
      if (x < minX) minX = x;
      if (y < minY) minY = y;
      if (x > maxX) maxX = x;
      if (y > maxY) maxY = y;
    }
  }
  return minX === Infinity ? null : { minX, minY, maxX, maxY };
}

/**
 * @param {number[][][]} strokes list of strokes, each a list of [x, y] points (any units, y down)
 * @param {object} opts {size, box, width, supersample}
 * @returns {Float64Array} size*size pixels, row-major, 1 = background, 0 = full ink
 */
export function rasterize(strokes, opts = {}) {
  const { size, box, width, supersample: ss } = { ...DEFAULTS, ...opts };
  const img = new Float64Array(size * size).fill(1);
  const b = bounds(strokes);
  if (!b) return img;
  const longer = Math.max(b.maxX - b.minX, b.maxY - b.minY);
  // the ink box (stroke centers plus half a stroke width on each side) gets `box` pixels
  const scale = longer > 0 ? Math.max(box - width, 1) / longer : 1;
  const cx = (b.minX + b.maxX) / 2, cy = (b.minY + b.maxY) / 2;
  const S = size * ss, r = width / 2, r2 = r * r;
  const hit = new Uint8Array(S * S);
  const map = ([x, y]) => [(x - cx) * scale + size / 2, (y - cy) * scale + size / 2];
  const stamp = (a, c) => {
    // mark every sample within r of segment a-c (sample centers at (j + 0.5) / ss)
    const dx = c[0] - a[0], dy = c[1] - a[1], L2 = dx * dx + dy * dy;
    const j0 = Math.max(0, Math.floor((Math.min(a[0], c[0]) - r) * ss));
    const j1 = Math.min(S - 1, Math.ceil((Math.max(a[0], c[0]) + r) * ss));
    const i0 = Math.max(0, Math.floor((Math.min(a[1], c[1]) - r) * ss));
    const i1 = Math.min(S - 1, Math.ceil((Math.max(a[1], c[1]) + r) * ss));
    for (let i = i0; i <= i1; i++) {
      const py = (i + 0.5) / ss;
      for (let j = j0; j <= j1; j++) {
        const px = (j + 0.5) / ss;
        let t = L2 > 0 ? ((px - a[0]) * dx + (py - a[1]) * dy) / L2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        const ex = px - (a[0] + t * dx), ey = py - (a[1] + t * dy);
        if (ex * ex + ey * ey <= r2) hit[i * S + j] = 1;
      }
    }
  };
  for (const s of strokes) {
    if (s.length === 0) continue;
    const pts = s.map(map);
    if (pts.length === 1) stamp(pts[0], pts[0]);
    for (let k = 1; k < pts.length; k++) stamp(pts[k - 1], pts[k]);
  }
  const n = ss * ss;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let c = 0;
      for (let i = 0; i < ss; i++) for (let j = 0; j < ss; j++) c += hit[(y * ss + i) * S + x * ss + j];
      img[y * size + x] = 1 - c / n;
    }
  }
  return img;
}
