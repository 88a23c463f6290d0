// Targets: a paginated, sortable list filtered by name or tag, and a target's page with its performance
// (success rate and durations over a period) and its history of branches.
import { html, useEffect, useState } from '../html.js';
import { ErrorBox, Loading, Pager, SortHeader, Status, Time, useDebounced, useLoad } from '../components.js';
import { link, navigate } from '../router.js';
import { formatDuration, percent } from '../format.js';

const PER_PAGE = 20;
const HISTORY = 20;

const address = (t) => (t.connection === 'local' ? 'this worker host' : `${t.ipAddress ?? t.hostname}:${t.port}`);

export function TargetsPage({ session, route }) {
  const q = route.query;
  const page = Number(q.page) || 1;
  const sort = q.sort || 'name';
  const order = q.order === 'desc' ? 'desc' : 'asc';
  const [text, setText] = useState(q.q ?? '');
  const [tag, setTag] = useState(q.tag ?? '');
  const name = useDebounced(text.trim(), 300);
  const tagValue = useDebounced(tag.trim(), 300);
  const go = (changes) => navigate(link('/targets', { q: q.q, tag: q.tag, sort, order, page, ...changes }));
  useEffect(() => {
    if (name !== (q.q ?? '') || tagValue !== (q.tag ?? '')) go({ q: name, tag: tagValue, page: 1 });
  }, [name, tagValue]);
  const { data, error, loading } = useLoad(session, (c) => c.targets.list({
    page, perPage: PER_PAGE, sort, order, name: q.q || undefined, tag: q.tag || undefined,
  }), [page, sort, order, q.q, q.tag]);
  const header = (field, label) => html`<${SortHeader} field=${field} label=${label} sort=${sort} order=${order}
    onSort=${(s, o) => go({ sort: s, order: o, page: 1 })} />`;
  return html`<section class="page" id="targets">
    <div class="page-head"><h1>Targets</h1>
      <input type="search" placeholder="Filter by name" value=${text} onInput=${(e) => setText(e.target.value)}
        aria-label="Filter targets by name" />
      <input type="search" placeholder="Tag" value=${tag} onInput=${(e) => setTag(e.target.value)} aria-label="Filter by tag" />
    </div>
    <${ErrorBox} error=${error} />
    ${loading && !data ? html`<${Loading} what="targets" />` : data && html`
      <table class="list"><thead><tr>${header('target_serial', 'Serial')}${header('name', 'Name')}<th>Address</th>
        <th>Tags</th><th>Queue</th><th>Enabled</th>${header('created_at', 'Created')}</tr></thead>
      <tbody>${data.data.map((t) => html`<tr key=${t.id}>
        <td><a class="serial" href=${`#/targets/${t.targetSerial}`}>${t.targetSerial}</a></td>
        <td><a href=${`#/targets/${t.targetSerial}`}>${t.name}</a></td><td>${address(t)}</td>
        <td>${t.tags.map((x) => html`<span class="pill">${x}</span> `)}</td><td>${t.queue}</td>
        <td>${t.enabled ? 'yes' : html`<span class="muted">no</span>`}</td><td><${Time} value=${t.createdAt} /></td>
      </tr>`)}</tbody></table>
      ${data.data.length === 0 && html`<p class="muted">No target matches.</p>`}
      <${Pager} pagination=${data.pagination} onPage=${(p) => go({ page: p })} />`}
  </section>`;
}

function Performance({ session, serial }) {
  const [days, setDays] = useState(30);
  const { data, error } = useLoad(session, (c) => c.targets.getPerformance(serial, { days }), [serial, days]);
  return html`<section class="panel" id="performance"><div class="panel-head"><h2>Performance</h2>
    <div class="tabs">${[7, 30, 90].map((d) => html`<button type="button" class=${d === days ? 'active' : ''}
      onClick=${() => setDays(d)}>${d} days</button>`)}</div></div>
    <${ErrorBox} error=${error} />
    ${data && html`<div class="tiles">
      <div class="tile"><b>${data.totalExecutions}</b><span>branches</span></div>
      <div class="tile ok"><b>${data.successfulExecutions}</b><span>successful</span></div>
      <div class="tile bad"><b>${data.failedExecutions}</b><span>failed</span></div>
      <div class="tile"><b>${percent(data.successRate)}</b><span>success rate</span></div>
      <div class="tile"><b>${formatDuration(data.averageDuration)}</b><span>average duration</span></div></div>`}
  </section>`;
}

function History({ session, serial }) {
  const [offset, setOffset] = useState(0);
  const { data, error } = useLoad(session, (c) => c.targets.history(serial, { limit: HISTORY, offset }), [serial, offset]);
  return html`<section class="panel" id="history"><h2>History</h2>
    <${ErrorBox} error=${error} />
    ${data && (data.executions.length === 0 ? html`<p class="muted">Nothing has run here yet.</p>` : html`
      <table><thead><tr><th>Branch</th><th>Job</th><th>Status</th><th>Exit</th><th>Started</th><th>Duration</th></tr></thead>
      <tbody>${data.executions.map((b) => html`<tr key=${b.branchSerial}>
        <td><a class="serial" href=${`#/executions/${b.executionSerial}?branch=${b.branchSerial}`}>${b.branchSerial}</a></td>
        <td><a href=${`#/jobs/${b.jobSerial}`}>${b.jobName ?? b.jobSerial}</a></td><td><${Status} status=${b.status} /></td>
        <td>${b.exitCode ?? '—'}</td><td><${Time} value=${b.startedAt} /></td>
        <td>${formatDuration(b.duration ?? (b.startedAt && b.completedAt
          ? (new Date(b.completedAt) - new Date(b.startedAt)) / 1000 : null))}</td></tr>`)}</tbody></table>
      <nav class="pager"><button type="button" disabled=${offset === 0} onClick=${() => setOffset(Math.max(0, offset - HISTORY))}>
        ‹ Newer</button><span>${offset + 1}–${offset + data.executions.length} of ${data.total}</span>
        <button type="button" disabled=${offset + data.executions.length >= data.total}
          onClick=${() => setOffset(offset + HISTORY)}>Older ›</button></nav>`)}
  </section>`;
}

export function TargetPage({ session, targetRef }) {
  const target = useLoad(session, (c) => c.targets.get(targetRef), [targetRef]);
  if (target.error) return html`<section class="page"><h1>Target ${targetRef}</h1><${ErrorBox} error=${target.error} /></section>`;
  if (!target.data) return html`<section class="page"><${Loading} what=${`target ${targetRef}`} /></section>`;
  const t = target.data;
  return html`<section class="page" id="target">
    <div class="page-head"><h1>${t.name} <span class="serial muted">${t.targetSerial}</span></h1>
      ${!t.enabled && html`<span class="pill">disabled</span>`}${t.archivedAt && html`<span class="pill">archived</span>`}</div>
    <dl class="facts inline">
      <dt>Address</dt><dd>${address(t)}</dd><dt>Connection</dt><dd>${t.connection}</dd>
      <dt>Queue</dt><dd>${t.queue}</dd><dt>Tags</dt><dd>${t.tags.length ? t.tags.join(', ') : '—'}</dd>
      <dt>Max concurrent runs</dt><dd>${t.maxConcurrentRuns ?? 'no limit'}</dd>
      <dt>Host key</dt><dd><code>${t.hostKeyFingerprint ?? 'not pinned yet'}</code></dd>
      ${t.description && html`<dt>Description</dt><dd>${t.description}</dd>`}
    </dl>
    <div class="columns"><${Performance} session=${session} serial=${t.targetSerial} />
      <${History} session=${session} serial=${t.targetSerial} /></div>
  </section>`;
}
