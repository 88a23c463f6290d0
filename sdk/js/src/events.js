// The live event stream over /ws/executions.
//
// Authentication is the first message {"action": "auth", "token": ...}: it works in browsers (which cannot
// set headers on a WebSocket) and keeps the token out of URLs and access logs. The server confirms with
// {"type": "subscribed"}; `stream.ready` resolves then, so an execution started afterwards is seen from its
// first event.
import { camelize } from './case.js';
import { EnableDRMError, EventStreamClosed, TransportError, Unauthorized, ValidationError, WaitTimeout } from './errors.js';

const POLICY_VIOLATION = 1008;
const NORMAL_CLOSURE = 1000;
const OPEN = 1;

/** The WebSocket URL for a server root (http→ws, https→wss) with the serial filters. */
export function eventsURL(root, { executionSerial, jobSerial } = {}) {
  const base = root.replace(/^http(s?):\/\//i, (_, s) => `ws${s}://`);
  const search = new URLSearchParams();
  if (executionSerial) search.set('execution_serial', executionSerial);
  if (jobSerial) search.set('job_serial', jobSerial);
  const text = search.toString();
  return `${base}/ws/executions${text ? `?${text}` : ''}`;
}

function messageText(data) {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return data == null ? '' : String(data);
}

const FILTER_FORMATS = {
  executionSerial: ['execution_serial', 'J20250001.0001', /^J\d{8,}\.\d{4,}$/],
  jobSerial: ['job_serial', 'J20250001', /^J\d{8,}$/],
};

/** A ValidationError shaped like the server's 422 for a malformed serial filter, or null. */
export function invalidFilter(filters) {
  for (const [key, [field, expectedFormat, pattern]] of Object.entries(FILTER_FORMATS)) {
    const value = filters?.[key];
    if (value === undefined || value === null || value === '') continue;
    if (typeof value !== 'string' || !pattern.test(value)) {
      const label = field.replace('_', ' ');
      return new ValidationError(422, 'validation_error', `Invalid ${label} format`, { field, expectedFormat, received: value });
    }
  }
  return null;
}

function listen(ws, type, handler) {
  if (typeof ws.addEventListener === 'function') ws.addEventListener(type, handler);
  else ws[`on${type}`] = handler;
}

/**
 * An open subscription to live execution events: `await stream.ready`, then `for await (const event of stream)`.
 * Iteration ends when the server closes the socket; breaking out of the loop closes it.
 */
export class EventStream {
  constructor({ url, token, WebSocket: WS, timeout = null, connectTimeout = 30000, filters = {}, precheck = null }) {
    if (typeof WS !== 'function') {
      throw new EnableDRMError('no WebSocket implementation: run where globalThis.WebSocket exists (browsers, Node 22+, '
        + 'Node 20 with --experimental-websocket) or pass { WebSocket } to the client');
    }
    if (!token) throw new Unauthorized(401, 'unauthorized', 'The event stream needs a token: log in first', {});
    this.timeout = timeout;
    this.filters = {};
    this.closed = false;
    this.closeCode = null;
    this.closeReason = '';
    this._requested = filters;
    this._queue = [];
    this._waiters = [];
    this._subscribed = false;
    this._lastError = null;
    this._ws = null;
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // a stream nobody awaits must not raise an unhandled rejection
    this._connectTimer = connectTimeout
      ? setTimeout(() => this._fail(new WaitTimeout(`no subscription confirmation within ${connectTimeout} ms`)), connectTimeout)
      : null;
    this._start(url, token, WS, precheck);
  }

  async _start(url, token, WS, precheck) {
    // Refuse what the server would refuse by closing the socket: a malformed filter (422, as the REST API
    // answers it) and, through `precheck` (GET /api/auth/me), a rejected token (the REST 401). The server's
    // own 1008 close stays handled below, for servers that close before the precheck could tell.
    const invalid = invalidFilter(this._requested);
    if (invalid) {
      this._fail(invalid);
      return;
    }
    if (precheck) {
      try {
        await precheck();
      } catch (error) {
        this._fail(error);
        return;
      }
    }
    if (this.closed) return;
    try {
      this._ws = new WS(url);
    } catch (cause) {
      this._fail(new TransportError(`cannot open ${url.split('?')[0]}: ${cause?.message ?? cause}`, { cause }));
      return;
    }
    listen(this._ws, 'open', () => {
      try {
        this._ws.send(JSON.stringify({ action: 'auth', token }));
      } catch (cause) {
        this._fail(new TransportError(`event stream failed: ${cause?.message ?? cause}`, { cause }));
      }
    });
    listen(this._ws, 'message', (event) => this._onMessage(event?.data ?? event));
    listen(this._ws, 'error', (event) => {
      this._lastError = event?.error ?? event?.message ?? 'WebSocket error';
    });
    listen(this._ws, 'close', (event) => this._onClose(event?.code ?? null, event?.reason ?? ''));
  }

  _onMessage(data) {
    let message;
    try {
      message = JSON.parse(messageText(data));
    } catch {
      return;
    }
    if (!message || typeof message !== 'object') return;
    if (!this._subscribed) {
      this._subscribed = true;
      if (this._connectTimer) clearTimeout(this._connectTimer);
      if (message.type === 'subscribed') {
        this.filters = camelize(message.data ?? {});
        this._resolveReady(this);
        return;
      }
      this._resolveReady(this); // a server without the confirmation: keep the event
    }
    this._push({ done: false, value: camelize(message) });
  }

  _onClose(code, reason) {
    const wasClosed = this.closed;
    this.closed = true;
    this.closeCode = code;
    this.closeReason = typeof reason === 'string' ? reason : String(reason ?? '');
    if (this._connectTimer) clearTimeout(this._connectTimer);
    if (!this._subscribed && !wasClosed) {
      this._fail(this._closeError(code, this.closeReason));
      return;
    }
    this._finish();
  }

  _closeError(code, reason) {
    if (code === POLICY_VIOLATION && /auth/i.test(reason)) {
      return new Unauthorized(401, 'unauthorized', reason || 'authentication required', { closeCode: code });
    }
    if (code === POLICY_VIOLATION) {
      const details = { closeCode: code };
      const lowered = reason.toLowerCase();
      for (const [field, key] of [['execution_serial', 'executionSerial'], ['job_serial', 'jobSerial']]) {
        const value = this._requested[key];
        if (value && (lowered.includes(field) || lowered.includes(field.replace('_', ' ')))) {
          Object.assign(details, { field, received: value });
          break;
        }
      }
      return new ValidationError(422, 'validation_error', reason || 'invalid filter', details);
    }
    if (this._lastError && code === null) return new TransportError(`event stream failed: ${this._lastError}`);
    return new EventStreamClosed(code, reason || (this._lastError ? String(this._lastError) : ''));
  }

  _fail(error) {
    this._subscribed = true; // nothing more to wait for
    if (this._connectTimer) clearTimeout(this._connectTimer);
    this._rejectReady(error);
    this._failure = error;
    for (const waiter of this._waiters.splice(0)) waiter.reject(error);
    this._closeSocket(NORMAL_CLOSURE);
  }

  _push(result) {
    const waiter = this._waiters.shift();
    if (waiter) waiter.resolve(result);
    else this._queue.push(result);
  }

  _finish() {
    for (const waiter of this._waiters.splice(0)) waiter.resolve({ done: true, value: undefined });
  }

  _closeSocket(code) {
    this.closed = true;
    try {
      if (this._ws && this._ws.readyState <= OPEN) this._ws.close(code);
    } catch {
      // already closing
    }
  }

  /** The next event ({ type, data }), waiting up to `timeout` ms (default: the stream's); rejects with WaitTimeout. */
  async next(timeout = this.timeout) {
    await this.ready;
    if (this._failure) throw this._failure;
    if (this._queue.length) return this._queue.shift();
    if (this.closed) return { done: true, value: undefined };
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (timeout) {
        const timer = setTimeout(() => {
          const index = this._waiters.indexOf(waiter);
          if (index >= 0) this._waiters.splice(index, 1);
          reject(new WaitTimeout(`no event within ${timeout} ms`));
        }, timeout);
        waiter.resolve = (value) => { clearTimeout(timer); resolve(value); };
        waiter.reject = (error) => { clearTimeout(timer); reject(error); };
      }
      this._waiters.push(waiter);
    });
  }

  /** Close the socket; pending and later reads end (done: true). */
  close() {
    if (this._connectTimer) clearTimeout(this._connectTimer);
    if (!this._subscribed) this._fail(new EventStreamClosed(NORMAL_CLOSURE, 'closed by the client'));
    this._closeSocket(NORMAL_CLOSURE);
    this._finish();
  }

  async return() {
    this.close();
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}
