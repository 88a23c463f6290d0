// A job: its actions, targets and schedule, its executions (live), and the Run form with execute's options.
import { html, useEffect, useRef, useState } from '../html.js';
import { ErrorBox, Loading, Status, Time, useLoad } from '../components.js';
import { TargetPicker } from '../targetpicker.js';
import { subscribe } from '../live.js';
import { navigate } from '../router.js';
import { formatDuration, elapsed, formatTime } from '../format.js';

const PAGE = 10;

function tags(text) {
  return text.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
}

function RunForm({ session, job, onClose }) {
  const [mode, setMode] = useState(job.targetIds.length || job.targetSelector ? 'job' : 'pick');
  const [picked, setPicked] = useState([]);
  const [selector, setSelector] = useState({ tagsAll: '', tagsAny: '', name: '' });
  const [params, setParams] = useState({});
  const [maxConcurrency, setMaxConcurrency] = useState('');
  const [maxErrors, setMaxErrors] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const options = {};
    if (mode === 'pick') options.targetIds = picked;
    if (mode === 'selector') {
      const s = {};
      if (tags(selector.tagsAll).length) s.tagsAll = tags(selector.tagsAll);
      if (tags(selector.tagsAny).length) s.tagsAny = tags(selector.tagsAny);
      if (selector.name.trim()) s.name = selector.name.trim();
      options.targetSelector = s;
    }
    const values = Object.fromEntries(Object.entries(params).filter(([, v]) => v !== ''));
    if (Object.keys(values).length) options.parameters = values;
    if (maxConcurrency.trim()) options.maxConcurrency = maxConcurrency.trim();
    if (maxErrors.trim()) options.maxErrors = maxErrors.trim();
    setBusy(true);
    setError(null);
    try {
      const execution = await session.client.jobs.execute(job.jobSerial, options);
      navigate(`#/executions/${execution.executionSerial}`);
    } catch (e) {
      setError(e);
      setBusy(false);
    }
  };
  const field = (key) => ({ value: selector[key], onInput: (e) => setSelector({ ...selector, [key]: e.target.value }) });
  return html`<form class="panel run-form" id="run-form" onSubmit=${submit}>
    <h2>Run ${job.name}</h2>
    <fieldset><legend>Targets</legend>
      <label class="radio"><input type="radio" name="mode" value="job" checked=${mode === 'job'}
        disabled=${!job.targetIds.length && !job.targetSelector} onChange=${() => setMode('job')} />
        The job's own (${job.targetSelector ? 'its selector' : `${job.targetIds.length} targets`})</label>
      <label class="radio"><input type="radio" name="mode" value="pick" checked=${mode === 'pick'}
        onChange=${() => setMode('pick')} /> Choose targets</label>
      <label class="radio"><input type="radio" name="mode" value="selector" checked=${mode === 'selector'}
        onChange=${() => setMode('selector')} /> By selector</label>
      ${mode === 'pick' && html`<${TargetPicker} session=${session} selected=${picked} onChange=${setPicked} />`}
      ${mode === 'selector' && html`<div class="grid-form">
        <label>Every tag of <input id="sel-tags-all" placeholder="web, prod" ...${field('tagsAll')} /></label>
        <label>Any tag of <input id="sel-tags-any" placeholder="canary" ...${field('tagsAny')} /></label>
        <label>Name like <input id="sel-name" placeholder="web-*" ...${field('name')} /></label></div>`}
    </fieldset>
    ${job.parameters.length > 0 && html`<fieldset><legend>Parameters</legend><div class="grid-form">
      ${job.parameters.map((p) => html`<label key=${p.name}>${p.name}${p.required ? ' *' : ''}
        <input name=${`param-${p.name}`} type=${p.secret ? 'password' : 'text'} autocomplete="off"
          placeholder=${p.default ?? (p.pattern ? `matches ${p.pattern}` : '')} required=${p.required && !p.default}
          value=${params[p.name] ?? ''} onInput=${(e) => setParams({ ...params, [p.name]: e.target.value })} />
        ${p.description && html`<small class="muted">${p.description}</small>`}</label>`)}
    </div></fieldset>`}
    <fieldset><legend>Rollout</legend><div class="grid-form">
      <label>Max concurrency <input id="max-concurrency" placeholder=${job.maxConcurrency ?? 'no limit (e.g. 10 or 25%)'}
        value=${maxConcurrency} onInput=${(e) => setMaxConcurrency(e.target.value)} /></label>
      <label>Max errors <input id="max-errors" placeholder=${job.maxErrors ?? 'no limit (e.g. 0, 2 or 10%)'}
        value=${maxErrors} onInput=${(e) => setMaxErrors(e.target.value)} /></label>
    </div></fieldset>
    <${ErrorBox} error=${error} />
    <div class="actions">
      <button type="submit" class="primary" id="run-submit" disabled=${busy}>${busy ? 'Starting…' : 'Run now'}</button>
      <button type="button" onClick=${onClose}>Close</button>
    </div>
  </form>`;
}

function counts(branches) {
  const out = {};
  for (const b of branches) out[b.status] = (out[b.status] ?? 0) + 1;
  return Object.entries(out).map(([s, n]) => html`<span class=${`count s-${s}`}><b>${n}</b> ${s.replace('_', ' ')}</span>`);
}

function Executions({ session, serial }) {
  const [offset, setOffset] = useState(0);
  const list = useLoad(session, (c) => c.jobs.executions(serial, { limit: PAGE, offset }), [serial, offset]);
  const pending = useRef(null);
  useEffect(() => {
    const sub = subscribe(session, { jobSerial: serial }, (events) => {
      if (events.some((e) => e.type.startsWith('execution_') || e.type === 'rollout_stopped')) {
        clearTimeout(pending.current); // one read for a run of starts and ends
        pending.current = setTimeout(() => list.reload(true), 300);
      }
    });
    return () => { sub.close(); clearTimeout(pending.current); };
  }, [serial, offset]);
  return html`<section class="panel" id="job-executions"><h2>Executions</h2>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data ? html`<${Loading} />` : list.data && (list.data.length === 0
      ? html`<p class="muted">Not run yet.</p>`
      : html`<table><thead><tr><th>Execution</th><th>Status</th><th>Trigger</th><th>Started</th><th>Duration</th>
          <th>Branches</th></tr></thead><tbody>${list.data.map((e) => html`<tr key=${e.id}>
          <td><a class="serial" href=${`#/executions/${e.executionSerial}`}>${e.executionSerial}</a></td>
          <td><${Status} status=${e.status} /></td><td>${e.trigger}</td><td><${Time} value=${e.startedAt} /></td>
          <td>${formatDuration(elapsed(e.startedAt, e.completedAt))}</td><td class="branch-counts">${counts(e.branches)}</td>
        </tr>`)}</tbody></table>`)}
    <nav class="pager">
      <button type="button" disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - PAGE))}>‹ Newer</button>
      <button type="button" disabled=${!list.data || list.data.length < PAGE} onClick=${() => setOffset(offset + PAGE)}>
        Older ›</button></nav>
  </section>`;
}

function Action({ action }) {
  const p = action.actionParameters ?? {};
  return html`<li class="action"><div><b>${action.position ?? ''}. ${action.actionName}</b>
    <span class="pill">${action.actionType}</span>
    ${action.timeoutSeconds && html`<span class="muted"> timeout ${formatDuration(action.timeoutSeconds)}</span>`}
    ${action.continueOnError && html`<span class="muted"> · continues on error</span>`}
    ${p.interpreter && html`<span class="muted"> · ${p.interpreter}</span>`}</div>
    <pre>${p.command ?? p.script}</pre></li>`;
}

export function JobPage({ session, serial }) {
  const job = useLoad(session, (c) => c.jobs.get(serial), [serial]);
  const targets = useLoad(session, (c) => c.targets.list({ perPage: 100, sort: 'name', order: 'asc' }), []);
  const [running, setRunning] = useState(false);
  if (job.error) return html`<section class="page"><h1>Job ${serial}</h1><${ErrorBox} error=${job.error} /></section>`;
  if (!job.data) return html`<section class="page"><${Loading} what=${`job ${serial}`} /></section>`;
  const j = job.data;
  const names = new Map((targets.data?.data ?? []).map((t) => [t.id, t]));
  const sel = j.targetSelector;
  return html`<section class="page" id="job">
    <div class="page-head"><h1>${j.name} <span class="serial muted">${j.jobSerial}</span></h1>
      <${Status} status=${j.status} />
      ${j.archivedAt && html`<span class="pill">archived</span>`}
      ${session.canWrite && !j.archivedAt && html`<button type="button" class="primary" id="run-job"
        onClick=${() => setRunning(true)}>Run…</button>`}
    </div>
    ${j.description && html`<p>${j.description}</p>`}
    ${running && html`<${RunForm} session=${session} job=${j} onClose=${() => setRunning(false)} />`}
    <div class="columns">
      <section class="panel"><h2>Actions</h2><ol class="actions-list">${j.actions.map((a) => html`<${Action} action=${a} />`)}</ol></section>
      <section class="panel"><h2>Targets</h2>
        ${sel ? html`<p>Chosen when it runs by selector:
            ${sel.tagsAll && html` every tag of <code>${sel.tagsAll.join(', ')}</code>`}
            ${sel.tagsAny && html` any tag of <code>${sel.tagsAny.join(', ')}</code>`}
            ${sel.name && html` name like <code>${sel.name}</code>`}</p>`
          : j.targetIds.length === 0 ? html`<p class="muted">None: choose them when you run it.</p>`
          : html`<ul class="target-list">${j.targetIds.map((id) => {
              const t = names.get(id);
              return html`<li key=${id}><a href=${`#/targets/${t ? t.targetSerial : id}`}>${t ? t.name : `target #${id}`}</a>
                ${t && html` <span class="muted">${t.targetSerial}</span>`}</li>`;
            })}</ul>`}
        <h2>Schedule</h2>
        ${j.schedule ? html`<p><code>${j.schedule.cron}</code> (${j.schedule.timezone}); next run ${formatTime(j.nextRunAt)}</p>`
          : j.scheduledAt ? html`<p>Once, at ${formatTime(j.scheduledAt)}</p>` : html`<p class="muted">Runs when started.</p>`}
        <dl class="facts">
          <dt>Max concurrency</dt><dd>${j.maxConcurrency ?? 'no limit'}</dd>
          <dt>Max errors</dt><dd>${j.maxErrors ?? 'no limit'}</dd>
          <dt>Parameters</dt><dd>${j.parameters.length ? j.parameters.map((p) => p.name).join(', ') : 'none'}</dd>
          <dt>Created</dt><dd><${Time} value=${j.createdAt} /></dd><dt>Updated</dt><dd><${Time} value=${j.updatedAt} /></dd>
        </dl>
      </section>
    </div>
    <${Executions} session=${session} serial=${j.jobSerial} />
  </section>`;
}
