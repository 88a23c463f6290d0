// Two tiny SVG charts of /api/analytics/executions buckets: volume (stacked bars) and success rate (a line).
// Plain SVG attributes only: the page's Content-Security-Policy allows no inline styles.
import { html } from './html.js';

const W = 600;
const H = 160;
const PAD = { left: 34, right: 8, top: 10, bottom: 22 };

function label(date) {
  return date.length > 10 ? date.slice(5, 16).replace('T', ' ') : date;
}

function Axis({ buckets, max, unit }) {
  const first = buckets[0]?.date ?? '';
  const last = buckets[buckets.length - 1]?.date ?? '';
  return html`
    <line class="axis" x1=${PAD.left} y1=${H - PAD.bottom} x2=${W - PAD.right} y2=${H - PAD.bottom} />
    <line class="grid-line" x1=${PAD.left} y1=${PAD.top} x2=${W - PAD.right} y2=${PAD.top} />
    <text class="tick" x=${PAD.left - 4} y=${PAD.top + 4} text-anchor="end">${max}${unit}</text>
    <text class="tick" x=${PAD.left - 4} y=${H - PAD.bottom} text-anchor="end">0</text>
    <text class="tick" x=${PAD.left} y=${H - 6}>${label(first)}</text>
    <text class="tick" x=${W - PAD.right} y=${H - 6} text-anchor="end">${label(last)}</text>`;
}

/** Executions per bucket: successful, failed and the rest (running, cancelled) stacked. */
export function VolumeChart({ buckets }) {
  const max = Math.max(1, ...buckets.map((b) => b.executions));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(1, slot * 0.7);
  const y = (v) => (v / max) * plotH;
  return html`<svg class="chart" viewBox=${`0 0 ${W} ${H}`} role="img" aria-label="executions per period">
    <${Axis} buckets=${buckets} max=${max} unit="" />
    ${buckets.map((b, i) => {
      const x = PAD.left + i * slot + (slot - barW) / 2;
      const other = Math.max(0, b.executions - b.successful - b.failed);
      let base = H - PAD.bottom;
      const parts = [['ok', b.successful], ['bad', b.failed], ['other', other]].map(([cls, v]) => {
        const hgt = y(v);
        base -= hgt;
        return v ? html`<rect class=${`bar ${cls}`} x=${x} y=${base} width=${barW} height=${hgt} />` : null;
      });
      return html`<g><title>${b.date}: ${b.executions} executions, ${b.successful} successful, ${b.failed} failed</title>
        <rect class="hit" x=${PAD.left + i * slot} y=${PAD.top} width=${slot} height=${plotH} />${parts}</g>`;
    })}
  </svg>`;
}

/** Success rate per bucket (buckets where nothing finished are gaps). */
export function RateChart({ buckets }) {
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(buckets.length, 1);
  const points = [];
  const segments = [];
  buckets.forEach((b, i) => {
    if (b.successRate === null || b.successRate === undefined) {
      if (points.length) segments.push(points.splice(0));
      return;
    }
    points.push([PAD.left + i * slot + slot / 2, PAD.top + plotH - (b.successRate / 100) * plotH, b]);
  });
  if (points.length) segments.push(points);
  return html`<svg class="chart" viewBox=${`0 0 ${W} ${H}`} role="img" aria-label="success rate per period">
    <${Axis} buckets=${buckets} max=${100} unit="%" />
    ${segments.map((seg) => html`<polyline class="rate" points=${seg.map(([x, yy]) => `${x},${yy}`).join(' ')} />`)}
    ${segments.flat().map(([x, yy, b]) => html`<circle class="dot" cx=${x} cy=${yy} r="3">
      <title>${b.date}: ${b.successRate} % of ${b.successful + b.failed} finished</title></circle>`)}
  </svg>`;
}
