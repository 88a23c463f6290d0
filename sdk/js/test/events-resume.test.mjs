// The event stream reconnects and resumes by itself. Against the live server, through a TCP proxy the test
// cuts: a stream on one execution, cut twice mid-execution (once with the server unreachable while branches
// finish), yields every event exactly once, in seq order, reconnecting with since=<last seq>; a 1008 (the user
// deactivated) ends it without a reconnect. Against a scripted WebSocket stub (pure client logic): a "resume"
// message and 1013 close make it reconnect from the message's positions, replayed seqs are not yielded twice,
// and a job-filtered stream reconnects without since.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EnableDRMClient } from '../src/index.js';
import { MiniWebSocket } from '../test-support/mini-websocket.mjs';
import { BASE_URL, adminClient, unique } from '../test-support/live.mjs';

async function waitFor(predicate, { timeout = 30000, interval = 20, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${message}`);
    await new Promise((resolve) => { setTimeout(resolve, interval); });
  }
}

/** A TCP proxy to the server: cut() drops every open connection (no WebSocket close); cut({ refuse: true })
 * also closes each new one at once until reopen(). `requests` holds each connection's request line. */
class CuttableProxy {
  constructor(upstreamPort) {
    this.requests = [];
    this.refused = 0;
    this._refusing = false;
    this._open = new Set();
    this._server = net.createServer((client) => {
      if (this._refusing) {
        this.refused += 1;
        client.resetAndDestroy();
        return;
      }
      const upstream = net.connect(upstreamPort, '127.0.0.1');
      this._open.add(client);
      this._open.add(upstream);
      let first = true;
      client.on('data', (chunk) => {
        if (first) {
          this.requests.push(chunk.toString('latin1').split('\r\n', 1)[0]);
          first = false;
        }
        upstream.write(chunk);
      });
      upstream.on('data', (chunk) => client.write(chunk));
      for (const [a, b] of [[client, upstream], [upstream, client]]) {
        a.on('end', () => b.end()); // an orderly end passes on as one: what was sent still arrives
        a.on('error', () => b.resetAndDestroy());
        a.on('close', () => this._open.delete(a));
      }
    });
  }

  async listen() {
    await new Promise((resolve) => { this._server.listen(0, '127.0.0.1', resolve); });
    this.url = `http://127.0.0.1:${this._server.address().port}`;
    return this;
  }

  wsQueries() {
    return this.requests.map((line) => new URL(line.split(' ')[1], 'http://x'))
      .filter((url) => url.pathname === '/ws/executions').map((url) => url.searchParams);
  }

  cut({ refuse = false } = {}) {
    this._refusing = refuse;
    for (const socket of this._open) socket.resetAndDestroy();
    this._open.clear();
  }

  reopen() {
    this._refusing = false;
  }

  async close() {
    this.cut();
    await new Promise((resolve) => { this._server.close(resolve); });
  }
}

/** Branches that wait for the test (as tests/gate.py): each makes wait.XXXXXX and ends once wait.XXXXXX.go or
 * all.go exists (60 s at most). World-writable: the server runs local commands as nobody. */
class Gate {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gate-'));
    fs.chmodSync(this.dir, 0o777);
    this.released = new Set();
  }

  get command() {
    return `t=$(mktemp ${this.dir}/wait.XXXXXX); i=0; `
      + `while [ ! -e "$t.go" ] && [ ! -e ${this.dir}/all.go ] && [ $i -lt 3000 ]; `
      + 'do sleep 0.02; i=$((i+1)); done; echo released';
  }

  waiting() {
    return fs.readdirSync(this.dir).filter((name) => name.startsWith('wait.') && !name.endsWith('.go')).sort();
  }

  release(count) {
    const chosen = this.waiting().filter((name) => !this.released.has(name)).slice(0, count);
    assert.equal(chosen.length, count, `only ${chosen} of ${count} branches are waiting`);
    for (const name of chosen) {
      fs.writeFileSync(path.join(this.dir, `${name}.go`), '');
      this.released.add(name);
    }
  }

  releaseAll() {
    fs.writeFileSync(path.join(this.dir, 'all.go'), '');
  }

  remove() {
    this.releaseAll();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function take(stream, count) {
  const events = [];
  for (let i = 0; i < count; i += 1) {
    const { done, value } = await stream.next();
    assert.equal(done, false, `the stream ended after ${events.length} of ${count} events`);
    events.push(value);
  }
  return events;
}

const IMPLEMENTATIONS = [['the global WebSocket', () => globalThis.WebSocket], ['a passed-in WebSocket', () => MiniWebSocket]];

describe('event stream resume (live server)', () => {
  let admin;
  const gates = [];
  before(async () => {
    admin = await adminClient();
  });
  after(() => {
    for (const gate of gates) gate.remove();
  });

  for (const [label, implementation] of IMPLEMENTATIONS) {
    it(`resumes a cut stream on one execution with since and yields every event once (${label})`, async () => {
      const gate = new Gate();
      gates.push(gate);
      const tag = unique('js-resume');
      const targets = [];
      for (let i = 0; i < 4; i += 1) targets.push(await admin.targets.create({ name: `${tag}-${i}`, connection: 'local' }));
      const job = await admin.jobs.create({
        name: tag,
        actions: [{ actionType: 'command', actionName: 'gate', actionParameters: { command: gate.command } }],
        targetIds: targets.map((t) => t.id),
      });
      const { executionSerial } = await admin.jobs.execute(job.jobSerial);
      await waitFor(() => gate.waiting().length >= 4, { message: 'four branches at the gate' });

      const proxy = await new CuttableProxy(Number(new URL(BASE_URL).port)).listen();
      const watcher = new EnableDRMClient({ baseURL: proxy.url, token: admin.token, WebSocket: implementation() });
      const stream = watcher.executions.events({ executionSerial, since: 0, timeout: 30000 });
      try {
        await stream.ready;
        const seen = await take(stream, 5); // execution_started and the four branch_started
        assert.deepEqual(seen.map((e) => e.data.seq), [1, 2, 3, 4, 5]);

        // away while two branches finish: the first reconnects are refused, then one goes through
        proxy.cut({ refuse: true });
        gate.release(2);
        await waitFor(async () => (await admin.executions.getBySerial(executionSerial)).branches
          .filter((b) => b.status === 'completed').length === 2, { message: 'two branches to finish while cut' });
        await waitFor(() => proxy.refused >= 2, { message: 'two refused reconnects' });
        proxy.reopen();
        seen.push(...await take(stream, 2)); // replayed from the event log

        proxy.cut(); // a plain drop: it reconnects at once
        gate.releaseAll();
        while (seen.at(-1).type !== 'execution_completed') seen.push(...await take(stream, 1));
        assert.equal(stream.reconnects, 2);
        assert.deepEqual(stream.positions, { [executionSerial]: 10 });
        assert.equal(stream.closed, false);

        assert.deepEqual(seen.map((e) => e.data.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        const types = seen.map((e) => e.type);
        assert.equal(types[0], 'execution_started');
        assert.equal(types.filter((t) => t === 'branch_started').length, 4);
        assert.equal(types.filter((t) => t === 'branch_completed').length, 4);
        assert.ok(seen.every((e) => e.data.executionSerial === executionSerial));
        assert.deepEqual(proxy.wsQueries().map((q) => q.get('since')), ['0', '5', '7']);
      } finally {
        stream.close();
        await proxy.close();
      }
    });
  }

  it('ends on a 1008 close (the user deactivated) without reconnecting', async () => {
    const username = unique('js-resume');
    const user = await admin.users.create({ username, password: 'resume-password-1', role: 'viewer' });
    const proxy = await new CuttableProxy(Number(new URL(BASE_URL).port)).listen();
    const viewer = new EnableDRMClient({ baseURL: proxy.url, WebSocket: globalThis.WebSocket ?? MiniWebSocket });
    await viewer.auth.login(username, 'resume-password-1');
    const stream = viewer.executions.events({ executionSerial: 'J20990001.0001', timeout: 20000 });
    try {
      await stream.ready;
      await admin.users.update(user.id, { isActive: false });
      const { done } = await stream.next(); // the server re-checks the token every 5 s and closes with 1008
      assert.equal(done, true);
      assert.equal(stream.closed, true);
      assert.deepEqual([stream.closeCode, stream.closeReason], [1008, 'user disabled']);
      assert.equal(stream.reconnects, 0);
      assert.equal(proxy.wsQueries().length, 1);
    } finally {
      stream.close();
      await proxy.close();
    }
  });
});

// ------------------------------------------------------------------------------------------ a scripted stub

const SERIAL = 'J20250001.0001';
const SUBSCRIBED = ['send', { type: 'subscribed', data: {} }];
const event = (seq, type = 'branch_completed', serial = SERIAL) => (
  ['send', { type, data: { execution_serial: serial, job_serial: serial.slice(0, 9), seq } }]);

function frame(opcode, payload) {
  const head = payload.length < 126 ? Buffer.from([0x80 | opcode, payload.length])
    : Buffer.from([0x80 | opcode, 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([head, payload]);
}

/** A WebSocket server that plays one script per connection: ['send', message], ['close', code, reason],
 * ['drop'] (the TCP connection ends without a close frame) or ['hold'] (open until the client goes). */
async function stubServer(scripts) {
  const paths = [];
  const sockets = new Set();
  let next = 0;
  const server = http.createServer();
  server.on('upgrade', (request, socket) => {
    paths.push(request.url);
    sockets.add(socket);
    const script = scripts[next] ?? [['drop']];
    next += 1;
    const accept = crypto.createHash('sha1').update(`${request.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.on('error', () => {});
    socket.on('data', () => {}); // the auth message and close replies: not part of the script
    for (const [kind, ...args] of script) {
      if (kind === 'send') socket.write(frame(0x1, Buffer.from(JSON.stringify(args[0]))));
      if (kind === 'close') {
        const reason = Buffer.from(args[1]);
        const payload = Buffer.alloc(2 + reason.length);
        payload.writeUInt16BE(args[0], 0);
        reason.copy(payload, 2);
        socket.write(frame(0x8, payload));
        socket.end();
        return;
      }
      if (kind === 'drop') {
        socket.end();
        return;
      }
      if (kind === 'hold') return;
    }
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    paths,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** [serial, seq] of each event until the stream ends, or up to an execution_completed when `untilCompleted`. */
async function drain(stream, { untilCompleted = false } = {}) {
  const got = [];
  for await (const e of stream) {
    got.push([e.data.executionSerial, e.data.seq]);
    if (untilCompleted && e.type === 'execution_completed') break;
  }
  return got;
}

describe('event stream resume (scripted stub)', () => {
  it('reconnects from a resume message after a 1013 close and never yields a seq twice', async () => {
    const server = await stubServer([
      [SUBSCRIBED, event(1, 'execution_started'), event(2), event(3),
        ['send', { type: 'resume', data: { since: { [SERIAL]: 2 } } }], ['close', 1013, 'too slow; resume with since=2']],
      [SUBSCRIBED, event(3), event(4), event(5, 'execution_completed'), ['hold']],
    ]);
    const { EventStream, eventsURL } = await import('../src/events.js');
    const stream = new EventStream({
      url: eventsURL(server.url, { executionSerial: SERIAL }), token: 'stub-token', timeout: 10000,
      WebSocket: globalThis.WebSocket ?? MiniWebSocket, filters: { executionSerial: SERIAL },
    });
    try {
      await stream.ready;
      assert.deepEqual(await drain(stream, { untilCompleted: true }), [1, 2, 3, 4, 5].map((n) => [SERIAL, n]));
      assert.equal(stream.reconnects, 1);
      assert.deepEqual(server.paths.map((p) => new URL(p, 'http://x').searchParams.get('since')), [null, '2']);
    } finally {
      stream.close();
      server.close();
    }
  });

  it('reconnects a job-filtered stream without since and skips what it already yielded; a 1008 ends it', async () => {
    const other = 'J20250001.0002';
    const server = await stubServer([
      [SUBSCRIBED, event(1, 'execution_started'), event(2), event(1, 'execution_started', other), ['drop']],
      [SUBSCRIBED, event(2), event(3), event(1, 'execution_started', other), event(2, 'branch_started', other),
        ['close', 1008, 'token revoked']],
    ]);
    const { EventStream, eventsURL } = await import('../src/events.js');
    const stream = new EventStream({
      url: eventsURL(server.url, { jobSerial: 'J20250001' }), token: 'stub-token', timeout: 10000,
      WebSocket: globalThis.WebSocket ?? MiniWebSocket, filters: { jobSerial: 'J20250001' },
    });
    try {
      await stream.ready;
      assert.deepEqual(await drain(stream), [[SERIAL, 1], [SERIAL, 2], [other, 1], [SERIAL, 3], [other, 2]]);
      assert.equal(stream.closeCode, 1008);
      assert.deepEqual(stream.positions, { [SERIAL]: 3, [other]: 2 });
      assert.deepEqual(server.paths.map((p) => new URL(p, 'http://x').search), ['?job_serial=J20250001', '?job_serial=J20250001']);
    } finally {
      stream.close();
      server.close();
    }
  });

  it('with reconnect: false ends when the connection drops', async () => {
    const server = await stubServer([[SUBSCRIBED, event(1, 'execution_started'), ['drop']]]);
    const { EventStream, eventsURL } = await import('../src/events.js');
    const stream = new EventStream({
      url: eventsURL(server.url, { executionSerial: SERIAL }), token: 'stub-token', timeout: 10000, reconnect: false,
      WebSocket: globalThis.WebSocket ?? MiniWebSocket, filters: { executionSerial: SERIAL },
    });
    try {
      await stream.ready;
      assert.deepEqual(await drain(stream), [[SERIAL, 1]]);
      assert.equal(server.paths.length, 1);
    } finally {
      stream.close();
      server.close();
    }
  });
});
