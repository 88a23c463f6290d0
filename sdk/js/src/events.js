// The live event stream over /ws/executions.
//
// Authentication is the first message {"action": "auth", "token": ...}: it works in browsers (which cannot
// set headers on a WebSocket) and keeps the token out of URLs and access logs. The server confirms with
// {"type": "subscribed"}; `stream.ready` resolves then, so an execution started afterwards is seen from its
// first event.
//
// Every execution event carries `data.seq` (1, 2, 3 … per execution). The stream remembers the last seq it
// yielded per execution (`positions`) and never yields one at or below it again. When the connection drops
// (not when the caller closes it, and not on a 1008 close: a refused token or filter) it reconnects with
// capped backoff; a stream on one execution reconnects with `since=<last seq>` and so misses nothing. A
// server `resume` message (sent with a 1013 close to a client too slow for its queue) names where to go on
// from; the stream reconnects from there. Streams filtered by job, or not at all, reconnect too, but seq is
// per execution and the server resumes one execution per socket: events committed while such a stream was
// away are not replayed (`positions` says where each execution stood; open `events({ executionSerial,
// since })` to fetch them).
import { camelize } from './case.js';
import { EnableDRMError, EventStreamClosed, TransportError, Unauthorized, ValidationError, WaitTimeout } from './errors.js';

const POLICY_VIOLATION = 1008;
const NORMAL_CLOSURE = 1000;
const OPEN = 1;
const RECONNECT_FIRST_DELAY = 100; // ms; doubled after each failed attempt up to maxReconnectDelay

/**
 * The WebSocket URL for a server root (http→ws, https→wss) with the serial filters, the seq to resume after
 * (one execution only) and include=output.
 */
export function eventsURL(root, { executionSerial, jobSerial, since, includeOutput } = {}) {
  const base = root.replace(/^http(s?):\/\//i, (_, s) => `ws${s}://`);
  const search = new URLSearchParams();
  if (executionSerial) search.set('execution_serial', executionSerial);
  if (jobSerial) search.set('job_serial', jobSerial);
  if (since !== undefined && since !== null) search.set('since', String(since));
  if (includeOutput) search.set('include', 'output');
  const text = search.toString();
  return `${base}/ws/executions${text ? `?${text}` : ''}`;
}

/** `url` with its since parameter set to `since` (removed when null). */
function withSince(url, since) {
  const [path, query = ''] = url.split('?');
  const search = new URLSearchParams(query);
  if (since === null || since === undefined) search.delete('since');
  else search.set('since', String(since));
  const text = search.toString();
  return `${path}${text ? `?${text}` : ''}`;
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
 * It reconnects by itself when the connection drops (see above). Iteration ends when the server closes it with
 * 1008 (a refused token or filter), when the caller closes it (breaking out of the loop does), or when a
 * stream on one execution has yielded its execution_completed and then loses its connection.
 */
export class EventStream {
  constructor({
    url, token, WebSocket: WS, timeout = null, connectTimeout = 30000, filters = {}, precheck = null,
    since = null, reconnect = true, maxReconnectDelay = 5000, getToken = null,
  }) {
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
    this.positions = {}; // execution serial -> the last seq yielded
    this.reconnects = 0;
    this._url = url;
    this._token = token;
    this._getToken = getToken;
    this._WS = WS;
    this._connectTimeout = connectTimeout;
    this._reconnect = reconnect;
    this._maxReconnectDelay = maxReconnectDelay;
    this._delay = RECONNECT_FIRST_DELAY;
    this._executionSerial = filters?.executionSerial || null;
    this._finished = new Set(); // executions whose execution_completed was yielded
    this._resumeFrom = null; // the positions of a server "resume" message
    this._closedByCaller = false;
    this._socketSubscribed = false; // the current socket's confirmation came
    this._reconnectTimer = null;
    this._attemptTimer = null;
    if (this._executionSerial && since !== null && since !== undefined) this.positions[this._executionSerial] = since;
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
    this._open(url, token);
  }

  /** One connection: authenticate with the first message, then hand its messages and its close on. */
  _open(url, token) {
    let ws;
    try {
      ws = new this._WS(url);
    } catch (cause) {
      const error = new TransportError(`cannot open ${url.split('?')[0]}: ${cause?.message ?? cause}`, { cause });
      if (this._subscribed) this._retry(null, error.message);
      else this._fail(error);
      return;
    }
    this._ws = ws;
    this._socketSubscribed = false;
    if (this._subscribed && this._connectTimeout) { // a reconnect that hangs is given up and tried again
      this._attemptTimer = setTimeout(() => {
        this._attemptTimer = null;
        if (ws === this._ws && !this._socketSubscribed) this._dropSocket(ws);
      }, this._connectTimeout);
    }
    listen(ws, 'open', () => {
      if (ws !== this._ws) return;
      try {
        ws.send(JSON.stringify({ action: 'auth', token }));
      } catch (cause) {
        if (this._subscribed) this._dropSocket(ws);
        else this._fail(new TransportError(`event stream failed: ${cause?.message ?? cause}`, { cause }));
      }
    });
    listen(ws, 'message', (event) => {
      if (ws === this._ws) this._onMessage(event?.data ?? event);
    });
    listen(ws, 'error', (event) => {
      if (ws !== this._ws) return;
      this._lastError = event?.error ?? event?.message ?? 'WebSocket error';
      // Node 20's WebSocket (undici) reports a failed connect with 'error' alone: no 'close' follows
      if (ws.readyState === 0) this._dropSocket(ws, `cannot connect: ${this._lastError}`);
    });
    listen(ws, 'close', (event) => {
      if (ws === this._ws) this._onClose(event?.code ?? null, event?.reason ?? '');
    });
  }

  /** Give up on a socket that will not (or cannot say it did) close: as if it had closed without a code. */
  _dropSocket(ws, reason = 'no subscription confirmation') {
    if (ws !== this._ws) return;
    this._ws = null; // a 'close' that ws.close() emits at once is ignored: _onClose below is the one
    try {
      ws.close(NORMAL_CLOSURE);
    } catch {
      // already closing, or never connected
    }
    this._ws = ws;
    this._onClose(null, reason);
  }

  _onMessage(data) {
    let message;
    try {
      message = JSON.parse(messageText(data));
    } catch {
      return;
    }
    if (!message || typeof message !== 'object') return;
    if (!this._socketSubscribed) {
      this._socketSubscribed = true;
      if (this._attemptTimer) clearTimeout(this._attemptTimer);
      if (this._subscribed) { // a reconnect went through
        this.reconnects += 1;
        this._delay = RECONNECT_FIRST_DELAY;
        this._resumeFrom = null;
      } else {
        this._subscribed = true;
        if (this._connectTimer) clearTimeout(this._connectTimer);
        if (message.type === 'subscribed') {
          const { since: _start, ...filters } = message.data ?? {};
          this.filters = camelize(filters);
        }
        this._resolveReady(this); // (a server without the confirmation: its first message is an event, kept)
      }
    }
    if (this._accept(message)) this._push({ done: false, value: camelize(message) });
  }

  /** Whether to yield this message: control messages and repeated seqs are consumed here. */
  _accept(message) {
    const data = message.data && typeof message.data === 'object' ? message.data : {};
    if (message.type === 'subscribed') { // a one-execution stream is told where it starts: a resume goes on from there
      const serial = this._executionSerial;
      if (serial && Number.isInteger(data.since) && this.positions[serial] === undefined) this.positions[serial] = data.since;
      return false;
    }
    if (message.type === 'resume') { // too slow: the server closes next (1013) and says where to go on from
      if (data.since && typeof data.since === 'object') this._resumeFrom = { ...data.since };
      return false;
    }
    const serial = data.execution_serial;
    const seq = data.seq;
    if (typeof serial === 'string' && Number.isInteger(seq)) {
      if (seq <= (this.positions[serial] ?? 0)) return false; // already yielded (a replay overlapping live ones)
      this.positions[serial] = seq;
      if (message.type === 'execution_completed') this._finished.add(serial);
    }
    return true;
  }

  _onClose(code, reason) {
    this._ws = null;
    this.closeCode = code;
    this.closeReason = typeof reason === 'string' ? reason : String(reason ?? '');
    if (this._attemptTimer) clearTimeout(this._attemptTimer);
    if (!this._subscribed) { // the first connection never got as far as the confirmation
      const wasClosed = this.closed;
      this.closed = true;
      if (this._connectTimer) clearTimeout(this._connectTimer);
      if (!wasClosed) this._fail(this._closeError(code, this.closeReason));
      else this._finish();
      return;
    }
    if (this._closedByCaller) {
      this._end();
      return;
    }
    if (code === POLICY_VIOLATION && !this._socketSubscribed) { // a reconnect refused: the token or filter
      this._fail(this._closeError(code, this.closeReason));
      return;
    }
    const done = this._executionSerial && this._finished.has(this._executionSerial);
    if (!this._reconnect || code === POLICY_VIOLATION || done) {
      this._end();
      return;
    }
    this._retry(this._resumeFrom && this._socketSubscribed ? 0 : null, this.closeReason); // a resume: at once
  }

  /** Try again after `delay` ms (null: the backoff's current step). */
  _retry(delay, reason) {
    const wait = delay ?? this._delay;
    if (delay === null) this._delay = Math.min(this._delay * 2, this._maxReconnectDelay);
    this.closeReason = reason ?? this.closeReason;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this._closedByCaller || this.closed) return;
      this._open(withSince(this._url, this._resumeAfter()), this._getToken?.() ?? this._token);
    }, wait);
  }

  /** `since` for the next connection: only a stream on one execution can resume exactly. */
  _resumeAfter() {
    const serial = this._executionSerial;
    if (!serial) return null;
    if (this._resumeFrom && Number.isInteger(this._resumeFrom[serial])) return this._resumeFrom[serial];
    return this.positions[serial] ?? null;
  }

  _end() {
    this.closed = true;
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
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    if (this._attemptTimer) clearTimeout(this._attemptTimer);
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
    this._closedByCaller = true;
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
