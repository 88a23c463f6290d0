// Choosing targets: a name filter and a checkbox per target (the first 100 matches, by name).
import { html, useState } from './html.js';
import { ErrorBox, Loading, useDebounced, useLoad } from './components.js';

export function TargetPicker({ session, selected, onChange }) {
  const [text, setText] = useState('');
  const name = useDebounced(text.trim(), 300);
  const { data, error, loading } = useLoad(session,
    (c) => c.targets.list({ perPage: 100, sort: 'name', order: 'asc', name: name || undefined }), [name]);
  const toggle = (id) => onChange(selected.includes(id) ? selected.filter((x) => x !== id) : [...selected, id]);
  const shown = data?.data ?? [];
  return html`<div class="picker">
    <div class="picker-head">
      <input type="search" placeholder="Filter targets by name" value=${text} onInput=${(e) => setText(e.target.value)}
        aria-label="Filter targets" />
      <button type="button" class="link" onClick=${() => onChange([...new Set([...selected, ...shown.map((t) => t.id)])])}>
        Select all shown</button>
      <button type="button" class="link" onClick=${() => onChange([])}>Clear</button>
      <span class="muted">${selected.length} selected</span>
    </div>
    <${ErrorBox} error=${error} />
    ${loading && !data ? html`<${Loading} what="targets" />` : html`<ul class="checks">
      ${shown.map((t) => html`<li key=${t.id}><label>
        <input type="checkbox" name="target" value=${t.id} data-name=${t.name} checked=${selected.includes(t.id)}
          onChange=${() => toggle(t.id)} />
        <span>${t.name}</span> <span class="muted">${t.targetSerial} · ${t.connection === 'local' ? 'local'
          : `${t.ipAddress ?? t.hostname}:${t.port}`}</span></label></li>`)}
      ${shown.length === 0 && html`<li class="muted">No target${name ? ` named like “${name}”` : ''}.</li>`}
    </ul>`}
    ${data?.pagination?.total > shown.length && html`<p class="muted">Showing ${shown.length} of ${data.pagination.total}:
      filter by name to find others.</p>`}
  </div>`;
}
