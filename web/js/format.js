// Plain words for times, durations and API errors.
import { ApiError, RateLimited, TransportError } from '/sdk/index.js';

export function formatTime(value) {
  if (!value) return '—';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

export function ago(value, now = Date.now()) {
  if (!value) return '—';
  const seconds = Math.round((now - new Date(value).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return String(value);
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return '—';
  const s = Number(seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Seconds between two timestamps (the second defaults to now). */
export function elapsed(start, end = null) {
  if (!start) return null;
  return ((end ? new Date(end).getTime() : Date.now()) - new Date(start).getTime()) / 1000;
}

export function percent(value) {
  return value === null || value === undefined ? '—' : `${Number(value).toFixed(value % 1 ? 2 : 0)} %`;
}

const LEADS = {
  400: 'The request was refused',
  401: 'You are not signed in, or your session has ended',
  403: 'You are not allowed to do this',
  404: 'Not found',
  409: 'This conflicts with the current state',
  413: 'The request is too large',
  422: 'Some input is not valid',
  429: 'Too many requests',
  503: 'The server is temporarily unavailable',
};

/** One sentence (plus the field, when the API names one) for anything an SDK call can throw. */
export function describeError(error) {
  if (!error) return '';
  if (error instanceof RateLimited) {
    const wait = error.retryAfter ? ` Try again in ${Math.ceil(error.retryAfter)} s.` : '';
    return `Too many requests: the rate limit for your account is used up.${wait}`;
  }
  if (error instanceof ApiError) {
    const lead = LEADS[error.status] ?? (error.status >= 500 ? 'The server failed' : `Error ${error.status}`);
    const details = error.details ?? {};
    const field = details.field ? ` (field: ${details.field}${details.received !== undefined
      ? `, received ${JSON.stringify(details.received)}` : ''})` : '';
    const message = error.message && error.message !== lead ? `: ${error.message}` : '';
    return `${lead}${message}${field}`;
  }
  if (error instanceof TransportError) return `The server cannot be reached (${error.message}).`;
  return error.message ? String(error.message) : String(error);
}
