// Small shared pieces of the pages.
import { html, useEffect, useState, useCallback, useRef } from './html.js';
import { describeError, formatTime, ago } from './format.js';

/** An API error in plain words; never swallowed. */
export function ErrorBox({ error, onDismiss = null }) {
  if (!error) return null;
  return html`<div class="error" role="alert">
    <span>${describeError(error)}</span>
    ${onDismiss && html`<button type="button" class="link" onClick=${onDismiss}>Dismiss</button>`}
  </div>`;
}

export function Status({ status }) {
  return html`<span class=${`badge s-${status}`}>${String(status ?? '—').replace('_', ' ')}</span>`;
}

export function Time({ value }) {
  return value ? html`<time datetime=${value} title=${formatTime(value)}>${ago(value)}</time>` : html`<span>—</span>`;
}

export function Loading({ what = '' }) {
  return html`<p class="muted loading">Loading${what ? ` ${what}` : ''}…</p>`;
}

/**
 * Load with an SDK call: { data, error, loading, reload, setData }. `load(client)` runs again when `deps` change;
 * an answer that arrives after a newer request started is dropped.
 */
export function useLoad(session, load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const generation = useRef(0);
  const run = useCallback(async (quiet = false) => {
    const mine = ++generation.current;
    if (!quiet) setState((s) => ({ ...s, loading: true, error: null }));
    try {
      const data = await load(session.client);
      if (mine === generation.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (mine === generation.current) setState((s) => ({ ...s, error, loading: false }));
    }
  }, deps); // eslint-disable-line
  useEffect(() => {
    run();
    return () => { generation.current += 1; };
  }, [run]);
  const setData = (update) => setState((s) => ({ ...s, data: typeof update === 'function' ? update(s.data) : update }));
  return { ...state, reload: run, setData };
}

/** Page x of y with previous/next. */
export function Pager({ pagination, onPage }) {
  if (!pagination) return null;
  const { page, pages, total, hasNext, hasPrev } = pagination;
  return html`<nav class="pager" aria-label="pages">
    <button type="button" disabled=${!hasPrev} onClick=${() => onPage(page - 1)}>‹ Previous</button>
    <span>Page ${page} of ${Math.max(pages, 1)} · ${total} in all</span>
    <button type="button" disabled=${!hasNext} onClick=${() => onPage(page + 1)}>Next ›</button>
  </nav>`;
}

/** A column header that sorts: click once for this column, again to flip the order. */
export function SortHeader({ field, label, sort, order, onSort }) {
  const active = sort === field;
  const arrow = active ? (order === 'asc' ? ' ▲' : ' ▼') : '';
  const next = active && order === 'desc' ? 'asc' : 'desc';
  return html`<th aria-sort=${active ? (order === 'asc' ? 'ascending' : 'descending') : 'none'}>
    <button type="button" class="sort" data-sort=${field} onClick=${() => onSort(field, active ? next : 'desc')}>
      ${label}${arrow}</button></th>`;
}

/** A value that changes while typing, reported `delay` ms after the last keystroke. */
export function useDebounced(value, delay = 300) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), delay);
    return () => clearTimeout(timer);
  }, [value, delay]);
  return settled;
}

/** Re-render every `ms` (relative times). */
export function useTick(ms = 5000) {
  const [, setTick] = useState(0);
  useEffect(() => {
    const timer = setInterval(() => setTick((t) => t + 1), ms);
    return () => clearInterval(timer);
  }, [ms]);
}
