// Jobs: paginated, sortable by column, searchable by name; the state is in the address (#/jobs?page=2&q=…).
import { html, useEffect, useState } from '../html.js';
import { ErrorBox, Loading, Pager, SortHeader, Status, Time, useDebounced, useLoad } from '../components.js';
import { link, navigate } from '../router.js';

const PER_PAGE = 20;

export function JobsPage({ session, route }) {
  const q = route.query;
  const page = Number(q.page) || 1;
  const sort = q.sort || 'created_at';
  const order = q.order === 'asc' ? 'asc' : 'desc';
  const [text, setText] = useState(q.q ?? '');
  const name = useDebounced(text.trim(), 300);
  const go = (changes) => navigate(link('/jobs', { q: q.q, sort, order, page, ...changes }));
  useEffect(() => {
    if (name !== (q.q ?? '')) go({ q: name, page: 1 });
  }, [name]);
  const { data, error, loading } = useLoad(session,
    (c) => c.jobs.list({ page, perPage: PER_PAGE, sort, order, name: q.q || undefined }), [page, sort, order, q.q]);
  const header = (field, label) => html`<${SortHeader} field=${field} label=${label} sort=${sort} order=${order}
    onSort=${(s, o) => go({ sort: s, order: o, page: 1 })} />`;
  return html`<section class="page" id="jobs">
    <div class="page-head"><h1>Jobs</h1>
      <input type="search" id="job-filter" placeholder="Filter by name" value=${text}
        onInput=${(e) => setText(e.target.value)} aria-label="Filter jobs by name" />
      ${session.canWrite && html`<a class="button primary" id="new-job" href="#/jobs/new">New job</a>`}
    </div>
    <${ErrorBox} error=${error} />
    ${loading && !data ? html`<${Loading} what="jobs" />` : data && html`
      <table class="list">
        <thead><tr>${header('job_serial', 'Serial')}${header('name', 'Name')}${header('status', 'Status')}
          <th>Targets</th><th>Runs</th>${header('created_at', 'Created')}${header('updated_at', 'Updated')}</tr></thead>
        <tbody>${data.data.map((job) => html`<tr key=${job.id}>
          <td><a class="serial" href=${`#/jobs/${job.jobSerial}`}>${job.jobSerial}</a></td>
          <td><a href=${`#/jobs/${job.jobSerial}`}>${job.name}</a>${job.schedule && html` <span class="pill" title=${`${job.schedule.cron} (${job.schedule.timezone})`}>cron</span>`}</td>
          <td><${Status} status=${job.status} /></td>
          <td>${job.targetSelector ? html`<span class="muted">selector</span>` : job.targetIds.length}</td>
          <td>${job.executionCount}</td>
          <td><${Time} value=${job.createdAt} /></td><td><${Time} value=${job.updatedAt} /></td>
        </tr>`)}</tbody>
      </table>
      ${data.data.length === 0 && html`<p class="muted">No job${q.q ? ` whose name contains “${q.q}”` : ' yet'}.</p>`}
      <${Pager} pagination=${data.pagination} onPage=${(p) => go({ page: p })} />`}
  </section>`;
}
