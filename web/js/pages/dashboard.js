// The dashboard: what runs now (live), the last failures, and volume and success rate from /api/analytics.
import { html, useEffect, useRef, useState } from '../html.js';
import { ErrorBox, Loading, Status, Time, useLoad, useTick } from '../components.js';
import { subscribe } from '../live.js';
import { percent } from '../format.js';
import { VolumeChart, RateChart } from '../chart.js';

const PERIODS = { '24h': 'hour', '7d': 'day', '30d': 'day', '90d': 'week' };
const SNAPSHOT = 200; // newest executions read at start; live events keep the lists current after that
const ANALYTICS_EVERY = 15_000; // ms: at most one analytics reload this often while executions finish

function Analytics({ session, period, setPeriod, version }) {
  const { data, error, loading } = useLoad(session,
    (c) => c.analytics.executions({ period, groupBy: PERIODS[period] }), [period, version]);
  return html`<section class="panel analytics">
    <div class="panel-head"><h2>Executions</h2>
      <div class="tabs" role="tablist">${Object.keys(PERIODS).map((p) => html`<button type="button" role="tab"
        aria-selected=${p === period} class=${p === period ? 'active' : ''} onClick=${() => setPeriod(p)}>${p}</button>`)}
      </div></div>
    <${ErrorBox} error=${error} />
    ${loading && !data ? html`<${Loading} />` : data && html`
      <div class="tiles">
        <div class="tile"><b id="total-executions">${data.totalExecutions}</b><span>executions</span></div>
        <div class="tile ok"><b>${data.successfulExecutions}</b><span>successful</span></div>
        <div class="tile bad"><b>${data.failedExecutions}</b><span>failed</span></div>
        <div class="tile"><b id="success-rate">${percent(data.successRate)}</b><span>success rate</span></div>
      </div>
      <div class="charts">
        <figure><figcaption>Volume per ${data.groupBy}</figcaption><${VolumeChart} buckets=${data.data} /></figure>
        <figure><figcaption>Success rate per ${data.groupBy}</figcaption><${RateChart} buckets=${data.data} /></figure>
      </div>`}
  </section>`;
}

function Progress({ done, total }) {
  const bar = useRef(null);
  useEffect(() => { if (bar.current) bar.current.style.width = `${(done / total) * 100}%`; });
  if (!total) return html`<span class="muted">—</span>`;
  return html`<span class="mini-progress" title=${`${done} of ${total} branches finished`}>
    <span class="fill" ref=${bar}></span><span class="label">${done}/${total}</span></span>`;
}

export function Dashboard({ session }) {
  const [period, setPeriod] = useState('7d');
  const [analyticsVersion, setAnalyticsVersion] = useState(0);
  const [live, setLive] = useState('connecting');
  const names = useRef(new Map()); // job serial -> name
  const lastReload = useRef(0);
  useTick(5000);

  const snapshot = useLoad(session, async (c) => {
    const found = await c.executions.search('J', { type: 'execution', limit: SNAPSHOT });
    const rows = new Map();
    for (const r of found.results) {
      names.current.set(r.jobSerial, r.jobName);
      rows.set(r.serial, { ...r, done: null, total: null });
    }
    // progress of what runs now (a few executions; each read once)
    const running = [...rows.values()].filter((r) => r.status === 'running').slice(0, 10);
    await Promise.all(running.map(async (r) => {
      try {
        const e = await c.executions.getBySerial(r.serial);
        r.total = e.branches.length;
        r.done = e.branches.filter((b) => b.status !== 'queued' && b.status !== 'running').length;
      } catch { /* shown without progress */ }
    }));
    return rows;
  }, []);

  useEffect(() => {
    const jobName = async (serial) => {
      if (names.current.has(serial)) return names.current.get(serial);
      try {
        const job = await session.client.jobs.get(serial);
        names.current.set(serial, job.name);
        snapshot.setData((rows) => (rows ? new Map(rows) : rows));
      } catch { /* the serial stands in */ }
      return serial;
    };
    const sub = subscribe(session, {}, (events) => {
      let finished = false;
      snapshot.setData((rows) => {
        if (!rows) return rows;
        const next = new Map(rows);
        for (const { type, data: d } of events) {
          const serial = d.executionSerial;
          if (type === 'execution_started') {
            jobName(d.jobSerial);
            next.set(serial, { type: 'execution', serial, status: 'running', jobSerial: d.jobSerial,
              startedAt: d.startedAt, completedAt: null, done: 0, total: d.branchCount ?? null });
          } else if (type === 'branch_completed' && next.has(serial)) {
            const r = next.get(serial);
            if (r.done !== null) next.set(serial, { ...r, done: r.done + 1 });
          } else if (type === 'execution_completed') {
            const r = next.get(serial) ?? { type: 'execution', serial, jobSerial: d.jobSerial, startedAt: d.startedAt };
            next.set(serial, { ...r, status: d.status, completedAt: d.completedAt });
            finished = true;
          }
        }
        return next;
      });
      if (finished && Date.now() - lastReload.current > ANALYTICS_EVERY) {
        lastReload.current = Date.now();
        setAnalyticsVersion((v) => v + 1);
      }
    }, (state, _error, reconnected) => {
      setLive(state);
      if (state === 'live' && reconnected) snapshot.reload(true); // events missed while away: read again
    });
    return () => sub.close();
  }, []);

  const rows = snapshot.data ? [...snapshot.data.values()] : [];
  const byStart = (a, b) => String(b.startedAt).localeCompare(String(a.startedAt));
  const running = rows.filter((r) => r.status === 'running').sort(byStart);
  const failures = rows.filter((r) => r.status === 'failed').sort((a, b) =>
    String(b.completedAt ?? b.startedAt).localeCompare(String(a.completedAt ?? a.startedAt))).slice(0, 10);
  const recent = rows.slice().sort(byStart).slice(0, 10);
  const job = (r) => html`<a href=${`#/jobs/${r.jobSerial}`}>${names.current.get(r.jobSerial) ?? r.jobName ?? r.jobSerial}</a>`;
  const exec = (r) => html`<a class="serial" href=${`#/executions/${r.serial}`}>${r.serial}</a>`;

  return html`<section class="page dashboard" id="dashboard">
    <div class="page-head"><h1>Dashboard</h1>
      <span class=${`live live-${live}`} id="live-state">${live === 'live' ? '● live' : live}</span></div>
    <${Analytics} session=${session} period=${period} setPeriod=${setPeriod} version=${analyticsVersion} />
    <${ErrorBox} error=${snapshot.error} />
    <div class="columns">
      <section class="panel" id="running-now">
        <h2>Running now <span class="pill">${running.length}</span></h2>
        ${snapshot.loading && !snapshot.data ? html`<${Loading} />` : running.length === 0
          ? html`<p class="muted">Nothing is running.</p>`
          : html`<table><thead><tr><th>Execution</th><th>Job</th><th>Started</th><th>Progress</th></tr></thead>
            <tbody>${running.map((r) => html`<tr key=${r.serial}><td>${exec(r)}</td><td>${job(r)}</td>
              <td><${Time} value=${r.startedAt} /></td><td><${Progress} done=${r.done} total=${r.total} /></td></tr>`)}
            </tbody></table>`}
      </section>
      <section class="panel" id="last-failures">
        <h2>Last failures</h2>
        ${failures.length === 0 ? html`<p class="muted">No failed execution among the latest ${SNAPSHOT}.</p>`
          : html`<table><thead><tr><th>Execution</th><th>Job</th><th>Ended</th></tr></thead>
            <tbody>${failures.map((r) => html`<tr key=${r.serial}><td>${exec(r)}</td><td>${job(r)}</td>
              <td><${Time} value=${r.completedAt ?? r.startedAt} /></td></tr>`)}</tbody></table>`}
      </section>
    </div>
    <section class="panel" id="recent">
      <h2>Latest executions</h2>
      ${recent.length === 0 ? html`<p class="muted">No execution yet: open <a href="#/jobs">Jobs</a> and run one.</p>`
        : html`<table><thead><tr><th>Execution</th><th>Job</th><th>Status</th><th>Started</th></tr></thead>
          <tbody>${recent.map((r) => html`<tr key=${r.serial}><td>${exec(r)}</td><td>${job(r)}</td>
            <td><${Status} status=${r.status} /></td><td><${Time} value=${r.startedAt} /></td></tr>`)}</tbody></table>`}
    </section>
  </section>`;
}
