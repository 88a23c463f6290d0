// HTTP transport: base URL, bearer auth, JSON with key-case conversion, error mapping, bounded 429 retries.
import { camelize, snakify, snakeKey } from './case.js';
import { TransportError, makeError } from './errors.js';

export const VERSION = '0.1.0';
const DEFAULT_RETRY_AFTER = 1; // seconds, when a 429 carries no usable Retry-After
const MAX_RETRY_WAIT = 60; // seconds: a 429 asking for a longer wait is thrown to the caller, never slept through

/** [server root, API root] for a base URL given with or without its trailing /api. */
export function apiRoots(baseURL) {
  if (typeof baseURL !== 'string' || !/^https?:\/\//i.test(baseURL.trim())) {
    throw new TypeError(`baseURL must start with http:// or https://, got ${JSON.stringify(baseURL)}`);
  }
  let root = baseURL.trim().replace(/\/+$/, '');
  if (root.endsWith('/api')) root = root.slice(0, -4);
  return [root, `${root}/api`];
}

/** One URL path segment (a serial, an id), percent-encoded. */
export function segment(value) {
  return encodeURIComponent(String(value));
}

/** Seconds to wait from a Retry-After header (delta-seconds or HTTP date); null when absent/invalid. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined) return null;
  const text = String(value).trim();
  if (!text) return null;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.max(0, Number(text));
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.max(0, (when - now) / 1000);
}

/** Query parameters: keys to snake_case, unset (undefined/null) ones dropped. */
export function queryString(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params ?? {})) {
    if (value === undefined || value === null) continue;
    const name = snakeKey(key);
    if (Array.isArray(value)) {
      for (const item of value) search.append(name, String(item));
    } else if (value instanceof Date) {
      search.append(name, value.toISOString());
    } else {
      search.append(name, String(value));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

function headersObject(headers) {
  const out = {};
  if (headers && typeof headers.forEach === 'function') headers.forEach((value, key) => { out[key.toLowerCase()] = value; });
  return out;
}

const defaultSleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

export class HttpTransport {
  constructor({ baseURL, token = null, maxRetries = 3, timeout = 30000, fetch = null, headers = {}, sleep = defaultSleep } = {}) {
    [this.root, this.apiRoot] = apiRoots(baseURL);
    if (!Number.isInteger(maxRetries) || maxRetries < 0) throw new TypeError('maxRetries must be an integer >= 0');
    this.token = token ?? null;
    this.refreshToken = null;
    this.maxRetries = maxRetries;
    this.timeout = timeout;
    this.headers = { ...headers };
    this._fetch = fetch;
    this._sleep = sleep;
  }

  /**
   * Send one API request (path relative to /api). 429s are retried after Retry-After up to maxRetries
   * times; any other error answer throws its ApiError subclass. Returns { status, headers, data }.
   * `headers`: extra request headers (e.g. Idempotency-Key).
   */
  async request(method, path, { query, body, token, auth = true, headers: extra = {} } = {}) {
    const url = this.apiRoot + (path.startsWith('/') ? path : `/${path}`) + queryString(query);
    const headers = { Accept: 'application/json', ...this.headers, ...extra };
    const bearer = token ?? (auth ? this.token : null);
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(snakify(body));
    }
    const fetchImpl = this._fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== 'function') throw new TransportError('no fetch implementation: pass { fetch } to the client');
    for (let attempt = 0; ; attempt += 1) {
      const { response, text } = await this._send(fetchImpl, method, url, headers, payload);
      let data = null;
      if (text) {
        try {
          data = JSON.parse(text);
        } catch {
          data = text;
        }
      }
      if (response.status < 400) {
        return { status: response.status, headers: response.headers, data: camelize(data) };
      }
      let retryAfter = null;
      if (response.status === 429) {
        retryAfter = parseRetryAfter(response.headers.get('retry-after'));
        const wait = retryAfter ?? DEFAULT_RETRY_AFTER;
        if (attempt < this.maxRetries && wait <= MAX_RETRY_WAIT) {
          await this._sleep(wait);
          continue;
        }
      }
      throw makeError(response.status, camelize(data), headersObject(response.headers), retryAfter);
    }
  }

  async json(method, path, options) {
    return (await this.request(method, path, options)).data;
  }

  async _send(fetchImpl, method, url, headers, body) {
    const controller = typeof AbortController === 'function' ? new AbortController() : null;
    let timer = null;
    if (controller && this.timeout) timer = setTimeout(() => controller.abort(), this.timeout);
    try {
      const response = await fetchImpl.call(globalThis, url, { method, headers, body, signal: controller?.signal });
      const text = await response.text();
      return { response, text };
    } catch (cause) {
      if (controller?.signal.aborted) {
        throw new TransportError(`${method} ${url} timed out after ${this.timeout} ms`, { cause });
      }
      throw new TransportError(`${method} ${url} failed: ${cause?.message ?? cause}`, { cause });
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }
}
