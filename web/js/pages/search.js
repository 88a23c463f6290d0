// Search results for what is not a serial: executions and branches (by serial prefix, job or target name),
// jobs and targets by name.
import { html } from '../html.js';
import { ErrorBox, Loading, Status, Time, useLoad } from '../components.js';

export function SearchPage({ session, route }) {
  const q = (route.query.q ?? '').trim();
  const { data, error, loading } = useLoad(session, async (c) => {
    if (!q) return null;
    const [runs, jobs, targets] = await Promise.all([
      c.executions.search(q, { type: 'all', limit: 50 }),
      c.jobs.list({ name: q, perPage: 20 }),
      c.targets.list({ name: q, perPage: 20 }),
    ]);
    return { runs, jobs: jobs.data, targets: targets.data };
  }, [q]);
  return html`<section class="page" id="search-results"><h1>Search: “${q}”</h1>
    <${ErrorBox} error=${error} />
    ${loading && !data ? html`<${Loading} />` : data && html`
      ${data.jobs.length > 0 && html`<section class="panel"><h2>Jobs</h2><ul>${data.jobs.map((j) => html`<li key=${j.id}>
        <a href=${`#/jobs/${j.jobSerial}`}>${j.name}</a> <span class="muted serial">${j.jobSerial}</span></li>`)}</ul></section>`}
      ${data.targets.length > 0 && html`<section class="panel"><h2>Targets</h2><ul>${data.targets.map((t) => html`<li key=${t.id}>
        <a href=${`#/targets/${t.targetSerial}`}>${t.name}</a> <span class="muted serial">${t.targetSerial}</span></li>`)}</ul></section>`}
      <section class="panel"><h2>Executions and branches <span class="pill">${data.runs.total}</span></h2>
        ${data.runs.results.length === 0 ? html`<p class="muted">Nothing matches.</p>` : html`<table>
          <thead><tr><th>Serial</th><th>Job</th><th>Target</th><th>Status</th><th>Started</th></tr></thead>
          <tbody>${data.runs.results.map((r) => html`<tr key=${r.serial}>
            <td><a class="serial" href=${r.type === 'branch' ? `#/executions/${r.serial.split('.').slice(0, 2).join('.')}?branch=${r.serial}`
              : `#/executions/${r.serial}`}>${r.serial}</a></td>
            <td><a href=${`#/jobs/${r.jobSerial}`}>${r.jobName}</a></td>
            <td>${r.targetSerial ? html`<a href=${`#/targets/${r.targetSerial}`}>${r.targetName}</a>` : '—'}</td>
            <td><${Status} status=${r.status} /></td><td><${Time} value=${r.startedAt} /></td></tr>`)}</tbody></table>`}
      </section>`}
  </section>`;
}
