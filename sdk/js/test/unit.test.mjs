// Pure client logic: key-case conversion, URLs, Retry-After, error mapping, the 429 retry loop against a
// tiny local stub server, WebSocket resolution and the event stream's close handling (with a fake socket).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { describe, it } from 'node:test';
import * as sdk from '../src/index.js';
import {
  ApiError, BadRequest, Conflict, EnableDRMClient, EnableDRMError, Forbidden, MethodNotAllowed, NotFound, PayloadTooLarge,
  RateLimited, ServerError, TransportError, Unauthorized, UnsupportedMediaType, ValidationError, WaitTimeout, camelize,
  errorClass, parseRetryAfter, snakify,
} from '../src/index.js';
import { apiRoots, queryString } from '../src/http.js';
import { eventsURL, EventStream } from '../src/events.js';

/** A local HTTP server answering with the next [status, headers, body] of `answers` (the last one repeats). */
async function stub(answers) {
  const requests = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      requests.push({ at: Date.now(), method: req.method, url: req.url, headers: req.headers, body });
      const [status, headers, payload] = answers[Math.min(requests.length - 1, answers.length - 1)];
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      res.end(payload === undefined ? '' : JSON.stringify(payload));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

const LIMITED = [429, { 'Retry-After': '1' }, { error: 'rate_limited', message: 'Rate limit exceeded', details: {} }];
const ME = [200, {}, { id: 7, username: 'stub', role: 'viewer', is_active: true, created_at: '2025-01-08T10:00:00Z' }];

describe('case conversion', () => {
  it('camelizes response keys recursively and leaves values alone', () => {
    const out = camelize({ success_rate: 93.33, recent_executions: [{ branch_serial: 'J20250001.0001.0001', exit_code: 0 }], action_parameters: { command: 'a_b' } });
    assert.deepEqual(out, { successRate: 93.33, recentExecutions: [{ branchSerial: 'J20250001.0001.0001', exitCode: 0 }], actionParameters: { command: 'a_b' } });
  });

  it('snakifies request keys recursively; Dates become RFC 3339', () => {
    const when = new Date('2030-01-02T03:04:05.000Z');
    assert.deepEqual(snakify({ targetIds: [1], actionParameters: { command: 'x' }, scheduledAt: when, is_active: true }),
      { target_ids: [1], action_parameters: { command: 'x' }, scheduled_at: '2030-01-02T03:04:05.000Z', is_active: true });
  });

  it('builds query strings in snake_case without unset values', () => {
    assert.equal(queryString({ perPage: 20, groupBy: 'day', name: undefined, tag: null, enabled: false }), '?per_page=20&group_by=day&enabled=false');
    assert.equal(queryString({}), '');
  });
});

describe('URLs', () => {
  it('accepts a base URL with or without /api', () => {
    assert.deepEqual(apiRoots('http://localhost:8000'), ['http://localhost:8000', 'http://localhost:8000/api']);
    assert.deepEqual(apiRoots('https://x.example/api/'), ['https://x.example', 'https://x.example/api']);
    assert.throws(() => apiRoots('localhost:8000'), TypeError);
    assert.throws(() => new EnableDRMClient({}), TypeError);
  });

  it('derives the WebSocket URL with the filters', () => {
    assert.equal(eventsURL('http://h:1'), 'ws://h:1/ws/executions');
    assert.equal(eventsURL('https://h', { jobSerial: 'J20250001' }), 'wss://h/ws/executions?job_serial=J20250001');
    assert.equal(eventsURL('http://h', { executionSerial: 'J20250001.0001' }), 'ws://h/ws/executions?execution_serial=J20250001.0001');
    assert.equal(eventsURL('http://h', { executionSerial: 'J20250001.0001', since: 0, includeOutput: true }),
      'ws://h/ws/executions?execution_serial=J20250001.0001&since=0&include=output');
  });
});

describe('Retry-After', () => {
  it('reads delta-seconds and HTTP dates', () => {
    assert.equal(parseRetryAfter('7'), 7);
    assert.equal(parseRetryAfter(null), null);
    assert.equal(parseRetryAfter('soon'), null);
    const now = Date.parse('2025-01-08T10:00:00Z');
    assert.equal(parseRetryAfter('Wed, 08 Jan 2025 10:00:30 GMT', now), 30);
  });
});

describe('error classes', () => {
  it('maps every error code (and status) to its class, all ApiError', () => {
    const expected = {
      bad_request: [400, BadRequest], unauthorized: [401, Unauthorized], forbidden: [403, Forbidden], not_found: [404, NotFound],
      method_not_allowed: [405, MethodNotAllowed], conflict: [409, Conflict], payload_too_large: [413, PayloadTooLarge],
      unsupported_media_type: [415, UnsupportedMediaType], validation_error: [422, ValidationError], rate_limited: [429, RateLimited],
      internal_error: [500, ServerError],
    };
    for (const [code, [status, Cls]] of Object.entries(expected)) {
      assert.equal(errorClass(status, code), Cls);
      assert.equal(errorClass(status, null), Cls);
      const error = new Cls(status, code, 'm', { a: 1 });
      assert.ok(error instanceof ApiError && error instanceof EnableDRMError && error instanceof Error);
      assert.equal(error.name, Cls.name);
    }
    assert.equal(errorClass(503, null), ServerError);
    assert.equal(errorClass(418, 'teapot'), ApiError);
  });

  it('raises the class of a stub answer the live server cannot be made to give', async () => {
    const cases = [
      [[500, {}, { error: 'internal_error', message: 'boom', details: { trace_id: 'x' } }], ServerError],
      [[503, {}, { message: 'maintenance' }], ServerError],
      [[415, {}, { error: 'unsupported_media_type', message: 'json only', details: {} }], UnsupportedMediaType],
      [[418, {}, { error: 'teapot', message: 'short and stout' }], ApiError],
    ];
    for (const [answer, Cls] of cases) {
      const server = await stub([answer]);
      try {
        const error = await new EnableDRMClient({ baseURL: server.url, token: 't' }).auth.me().then(() => null, (e) => e);
        assert.equal(error?.constructor, Cls);
        assert.equal(error.status, answer[0]);
        assert.equal(error.message, answer[2].message);
      } finally {
        await server.close();
      }
    }
    const server = await stub([[500, {}, { error: 'internal_error', message: 'boom', details: { trace_id: 'x' } }]]);
    try {
      await assert.rejects(new EnableDRMClient({ baseURL: server.url }).auth.me(),
        (e) => e instanceof ServerError && e.error === 'internal_error' && e.details.traceId === 'x');
    } finally {
      await server.close();
    }
  });

  it('reports an unreachable server as a TransportError', async () => {
    await assert.rejects(new EnableDRMClient({ baseURL: 'http://127.0.0.1:9', timeout: 2000 }).auth.me(), TransportError);
  });
});

describe('429 retries (stub server)', () => {
  it('retries after Retry-After, then succeeds', async () => {
    const server = await stub([LIMITED, ME]);
    try {
      const client = new EnableDRMClient({ baseURL: server.url, token: 't', maxRetries: 3 });
      const me = await client.auth.me();
      assert.equal(me.username, 'stub');
      assert.equal(me.isActive, true);
      assert.equal(server.requests.length, 2);
      assert.ok(server.requests[1].at - server.requests[0].at >= 950, 'waited Retry-After: 1');
      assert.equal(server.requests[0].headers.authorization, 'Bearer t');
    } finally {
      await server.close();
    }
  });

  it('gives up after maxRetries with RateLimited carrying retryAfter', async () => {
    const server = await stub([LIMITED]);
    try {
      await assert.rejects(new EnableDRMClient({ baseURL: server.url, token: 't', maxRetries: 1 }).auth.me(),
        (e) => e instanceof RateLimited && e.status === 429 && e.retryAfter === 1 && e.headers['retry-after'] === '1');
      assert.equal(server.requests.length, 2);
      const noRetry = new EnableDRMClient({ baseURL: server.url, token: 't', maxRetries: 0 });
      await assert.rejects(noRetry.auth.me(), RateLimited);
      assert.equal(server.requests.length, 3);
      assert.throws(() => new EnableDRMClient({ baseURL: server.url, maxRetries: -1 }), TypeError);
    } finally {
      await server.close();
    }
  });

  it('sends camelCase bodies as snake_case JSON', async () => {
    const server = await stub([[201, {}, { id: 1, job_serial: 'J20250001', target_ids: [3] }]]);
    try {
      const job = await new EnableDRMClient({ baseURL: server.url, token: 't' }).jobs.create({ name: 'n', targetIds: [3], actions: [{ actionType: 'command', actionName: 'a', actionParameters: { command: 'x' } }] });
      assert.deepEqual(job, { id: 1, jobSerial: 'J20250001', targetIds: [3] });
      assert.deepEqual(JSON.parse(server.requests[0].body), { name: 'n', target_ids: [3], actions: [{ action_type: 'command', action_name: 'a', action_parameters: { command: 'x' } }] });
      assert.equal(server.requests[0].headers['content-type'], 'application/json');
    } finally {
      await server.close();
    }
  });
});

/** A scripted stand-in for a WebSocket class: each instance runs `script(socket)` once it is "open". */
function fakeWebSocket(script) {
  return class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.listeners = {};
      FakeWebSocket.last = this;
      setTimeout(() => {
        this.readyState = 1;
        this.emit('open', {});
        script(this);
      }, 1);
    }
    addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
    emit(type, event) { for (const fn of this.listeners[type] ?? []) fn(event); }
    send(text) { this.sent.push(JSON.parse(text)); }
    close(code) { this.readyState = 3; this.emit('close', { code: code ?? 1000, reason: '' }); }
    serverClose(code, reason) { this.readyState = 3; this.emit('close', { code, reason }); }
  };
}

describe('event stream', () => {
  it('needs a WebSocket implementation from globalThis or the options', () => {
    const client = new EnableDRMClient({ baseURL: 'http://127.0.0.1:9', token: 't' });
    const saved = globalThis.WebSocket;
    try {
      globalThis.WebSocket = undefined;
      assert.throws(() => client.executions.events(), (e) => e instanceof EnableDRMError && /WebSocket/.test(e.message));
    } finally {
      globalThis.WebSocket = saved;
    }
  });

  it('authenticates with a first message, yields camelCase events and ends on close (reconnect: false)', async () => {
    const WS = fakeWebSocket((ws) => {
      ws.emit('message', { data: JSON.stringify({ type: 'subscribed', data: { job_serial: 'J20250001' } }) });
      ws.emit('message', { data: JSON.stringify({ type: 'execution_started', data: { execution_serial: 'J20250001.0001', branch_count: 1 } }) });
      ws.serverClose(1001, 'going away');
    });
    const stream = new EventStream({ url: 'ws://x/ws/executions?job_serial=J20250001', token: 'tok', WebSocket: WS, filters: { jobSerial: 'J20250001' }, reconnect: false });
    await stream.ready;
    assert.deepEqual(stream.filters, { jobSerial: 'J20250001' });
    assert.deepEqual(WS.last.sent, [{ action: 'auth', token: 'tok' }]);
    const events = [];
    for await (const event of stream) events.push(event);
    assert.deepEqual(events, [{ type: 'execution_started', data: { executionSerial: 'J20250001.0001', branchCount: 1 } }]);
    assert.equal(stream.closeCode, 1001);
  });

  it('reconnects after a close with since=<last seq>, skips repeated seqs, and ends after execution_completed', async () => {
    const urls = [];
    const send = (ws, type, seq) => ws.emit('message', { data: JSON.stringify({ type, data: { execution_serial: 'J20250001.0001', seq } }) });
    const WS = fakeWebSocket((ws) => {
      urls.push(ws.url);
      ws.emit('message', { data: JSON.stringify({ type: 'subscribed', data: {} }) });
      if (urls.length === 1) {
        send(ws, 'execution_started', 1);
        send(ws, 'branch_started', 2);
      } else {
        send(ws, 'branch_started', 2);
        send(ws, 'execution_completed', 3);
      }
      ws.serverClose(1001, 'going away');
    });
    const stream = new EventStream({ url: 'ws://x/ws/executions?execution_serial=J20250001.0001', token: 't', WebSocket: WS,
      filters: { executionSerial: 'J20250001.0001' }, timeout: 5000 });
    const seqs = [];
    for await (const event of stream) seqs.push(event.data.seq);
    assert.deepEqual(seqs, [1, 2, 3]);
    assert.deepEqual(urls, ['ws://x/ws/executions?execution_serial=J20250001.0001',
      'ws://x/ws/executions?execution_serial=J20250001.0001&since=2']);
    assert.equal(stream.reconnects, 1);
    assert.deepEqual(stream.positions, { 'J20250001.0001': 3 });
  });

  it('turns a 1008 close before the subscription into Unauthorized or ValidationError', async () => {
    const auth = new EventStream({ url: 'ws://x', token: 'bad', WebSocket: fakeWebSocket((ws) => ws.serverClose(1008, 'authentication required')) });
    await assert.rejects(auth.ready, (e) => e instanceof Unauthorized && e.details.closeCode === 1008);
    const filter = new EventStream({ url: 'ws://x', token: 't', filters: { jobSerial: 'J20259999' }, WebSocket: fakeWebSocket((ws) => ws.serverClose(1008, 'Invalid job serial format')) });
    await assert.rejects(filter.ready, (e) => e instanceof ValidationError && e.details.field === 'job_serial');
    const other = new EventStream({ url: 'ws://x', token: 't', WebSocket: fakeWebSocket((ws) => ws.serverClose(1011, 'events unavailable')) });
    await assert.rejects(other.ready, (e) => e instanceof sdk.EventStreamClosed && e.code === 1011);
  });

  it('checks serial filters before connecting, as the server would', async () => {
    const stream = new EventStream({ url: 'ws://x', token: 't', filters: { executionSerial: 'J2025.1' }, WebSocket: fakeWebSocket(() => {}) });
    await assert.rejects(stream.ready, (e) => e instanceof ValidationError && e.details.field === 'execution_serial'
      && e.details.expectedFormat === 'J20250001.0001' && e.details.received === 'J2025.1');
  });

  it('times out waiting for an event with WaitTimeout', async () => {
    const WS = fakeWebSocket((ws) => ws.emit('message', { data: JSON.stringify({ type: 'subscribed', data: {} }) }));
    const stream = new EventStream({ url: 'ws://x', token: 't', WebSocket: WS, timeout: 50 });
    await assert.rejects(stream.next(), WaitTimeout);
    stream.close();
    assert.deepEqual(await stream.next(), { done: true, value: undefined });
  });
});

describe('package', () => {
  it('has no runtime dependencies and is an ES module', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url)));
    assert.equal(pkg.name, '@enabledrm/sdk');
    assert.equal(pkg.type, 'module');
    assert.equal(pkg.dependencies, undefined);
    assert.equal(pkg.peerDependencies, undefined);
  });

  it('declares every export in index.d.ts', () => {
    const dts = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8');
    for (const name of Object.keys(sdk)) {
      assert.match(dts, new RegExp(`export (declare )?(class|function|const) ${name}\\b`), `${name} is not declared`);
    }
  });
});
