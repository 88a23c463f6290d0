// Hash routes (#/jobs/J20260001): the server serves one page, and a serial's page is a link anyone can share.
import { useEffect, useState } from './html.js';

export function parseHash(hash = globalThis.location.hash) {
  const raw = hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { path, parts, query: Object.fromEntries(new URLSearchParams(query)) };
}

export function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const onChange = () => setRoute(parseHash());
    addEventListener('hashchange', onChange);
    return () => removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

export function navigate(hash) {
  if (globalThis.location.hash !== hash) globalThis.location.hash = hash;
}

/** `#/path?query` with empty values left out. */
export function link(path, query = {}) {
  const search = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') search.set(k, String(v));
  const text = search.toString();
  return `#${path}${text ? `?${text}` : ''}`;
}
