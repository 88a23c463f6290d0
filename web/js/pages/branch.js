// A branch: where it ran, how it ended, each step's output; while it runs, its output as it is printed.
import { html, useEffect, useRef, useState } from '../html.js';
import { ErrorBox, Loading, Status, Time, useLoad } from '../components.js';
import { subscribe } from '../live.js';
import { formatDuration } from '../format.js';
import { NotFound } from '/sdk/index.js';

const STREAMS = ['stdout', 'stderr'];
const encoder = new TextEncoder();

/** stdout and stderr of a running branch: read from offset 0, then followed through branch_output events. */
function LiveOutput({ session, branchSerial, executionSerial }) {
  const [text, setText] = useState({ stdout: '', stderr: '' });
  const [error, setError] = useState(null);
  const [unsupported, setUnsupported] = useState(false);
  const next = useRef({ stdout: null, stderr: null });
  useEffect(() => {
    let closed = false;
    const early = []; // events that came before the first read answered
    const append = (stream, offset, data) => { // offsets count bytes (UTF-8), not characters
      const at = next.current[stream];
      const size = encoder.encode(data).length;
      if (offset + size <= at) return true; // already shown
      if (offset !== at) return false; // a gap or a partial overlap: read from where we are
      next.current[stream] = offset + size;
      setText((t) => ({ ...t, [stream]: t[stream] + data }));
      return true;
    };
    const busy = {};
    const read = async (stream) => { // one read per stream at a time; a gap seen meanwhile reads once more after
      if (busy[stream]) { busy[stream] = 'again'; return; }
      busy[stream] = true;
      try {
        do {
          if (busy[stream] === 'again') busy[stream] = true;
          const from = next.current[stream] ?? 0;
          const out = await session.client.request('GET',
            `/executions/branch/${encodeURIComponent(branchSerial)}/output`, { query: { stream, offset: from } });
          if (closed) return;
          next.current[stream] = out.nextOffset;
          if (out.data) setText((t) => ({ ...t, [stream]: (from === 0 ? '' : t[stream]) + out.data }));
        } while (busy[stream] === 'again');
      } finally {
        busy[stream] = false;
      }
    };
    const onEvents = (events) => {
      for (const e of events) {
        if (e.type !== 'branch_output' || e.data.branchSerial !== branchSerial) continue;
        const { stream, offset, data } = e.data;
        if (next.current[stream] === null) early.push(e);
        else if (!append(stream, offset, data)) read(stream).catch(setError);
      }
    };
    const sub = subscribe(session, { executionSerial, includeOutput: true }, onEvents);
    Promise.all(STREAMS.map(read)).then(() => onEvents(early.splice(0))).catch((e) => {
      if (e instanceof NotFound && /No route/.test(e.message)) setUnsupported(true);
      else setError(e);
    });
    return () => { closed = true; sub.close(); };
  }, [branchSerial]);
  if (unsupported) return html`<p class="muted">This server does not serve live output; it appears when the branch ends.</p>`;
  return html`<div class="live-output" id="live-output"><h3>Live output <span class="live live-live">● running</span></h3>
    <${ErrorBox} error=${error} />
    <pre class="stdout">${text.stdout || '(nothing on stdout yet)'}</pre>
    ${text.stderr && html`<pre class="stderr">${text.stderr}</pre>`}</div>`;
}

function Step({ step }) {
  return html`<li class="step"><div class="step-head"><b>${step.position}. ${step.actionName}</b> <${Status} status=${step.status} />
    ${step.exitCode !== null && step.exitCode !== undefined && html`<span class="muted">exit ${step.exitCode}</span>`}
    ${step.errorType && html`<span class="pill bad">${step.errorType}</span>`}
    <span class="muted">${formatDuration(step.duration)}</span></div>
    ${step.stdout && html`<pre class="stdout">${step.stdout}</pre>`}
    ${step.stderr && html`<pre class="stderr">${step.stderr}</pre>`}</li>`;
}

export function BranchPanel({ session, serial, executionSerial, version, onClose }) {
  const branch = useLoad(session, (c) => c.executions.getBranch(serial), [serial, version]);
  const b = branch.data;
  const running = b && (b.status === 'running' || b.status === 'queued');
  return html`<aside class="panel branch" id="branch-panel" data-serial=${serial} data-status=${b?.status ?? ''}>
    <div class="panel-head"><h2>Branch <span class="serial">${serial}</span></h2>
      <button type="button" class="link" onClick=${onClose} aria-label="Close the branch">Close ✕</button></div>
    <${ErrorBox} error=${branch.error} />
    ${!b ? html`<${Loading} />` : html`
      <dl class="facts">
        <dt>Target</dt><dd><a href=${`#/targets/${b.target.targetSerial}`}>${b.target.name}</a>
          <span class="muted"> ${b.target.targetSerial} · ${b.target.ipAddress ?? b.target.hostname ?? 'local'}</span></dd>
        <dt>Status</dt><dd><${Status} status=${b.status} />${b.errorType && html` <span class="pill bad">${b.errorType}</span>`}</dd>
        <dt>Exit code</dt><dd>${b.exitCode ?? '—'}</dd>
        <dt>Started</dt><dd><${Time} value=${b.startedAt} /></dd>
        <dt>Duration</dt><dd>${formatDuration(b.duration)}</dd>
      </dl>
      ${running && b.status === 'running' && html`<${LiveOutput} key=${serial} session=${session} branchSerial=${serial}
        executionSerial=${executionSerial} />`}
      ${b.steps.length > 0 && html`<h3>Steps</h3><ol class="steps">${b.steps.map((s) => html`<${Step} key=${s.position} step=${s} />`)}</ol>`}
      ${!running && b.steps.length === 0 && html`<h3>Output</h3>
        ${b.resultOutput && html`<pre class="stdout">${b.resultOutput}</pre>`}
        ${b.resultError && html`<pre class="stderr">${b.resultError}</pre>`}
        ${!b.resultOutput && !b.resultError && html`<p class="muted">No output.</p>`}`}
      ${!running && b.steps.length > 0 && b.resultError && !b.steps.some((s) => s.stderr && b.resultError.includes(s.stderr.trim()))
        && html`<h3>Error</h3><pre class="stderr">${b.resultError}</pre>`}`}
  </aside>`;
}
