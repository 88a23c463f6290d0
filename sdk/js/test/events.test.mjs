// Live WebSocket events: with the global WebSocket (browsers, Node 22+, Node 20 --experimental-websocket) and
// with an implementation passed in by the caller.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { EnableDRMClient, EnableDRMError, Unauthorized, ValidationError, WaitTimeout } from '../src/index.js';
import { MiniWebSocket } from '../test-support/mini-websocket.mjs';
import { BASE_URL, adminClient, seed } from '../test-support/live.mjs';

const EXPECTED = ['execution_started', 'branch_started', 'branch_completed', 'execution_completed'];

async function watchOneExecution(client, seeded) {
  const stream = client.executions.events({ jobSerial: seeded.job.jobSerial, timeout: 20000 });
  await stream.ready;
  assert.deepEqual(stream.filters, { jobSerial: seeded.job.jobSerial });
  const execution = await client.jobs.execute(seeded.job.jobSerial);
  const seen = [];
  for await (const event of stream) {
    assert.equal(event.data.executionSerial, execution.executionSerial);
    assert.equal(event.data.jobSerial, seeded.job.jobSerial);
    seen.push(event.type);
    if (event.type === 'branch_completed') {
      assert.equal(event.data.exitCode, 0);
      assert.equal(event.data.targetSerialRef, seeded.target.targetSerial);
    }
    if (event.type === 'execution_completed') {
      assert.equal(event.data.status, 'completed');
      break; // closes the stream
    }
  }
  assert.deepEqual(seen, EXPECTED);
  assert.equal(stream.closed, true);
  return execution;
}

describe('live events', () => {
  let admin;
  let seeded;
  before(async () => {
    admin = await adminClient();
    seeded = await seed(admin, 'js-events');
  });

  it('uses the global WebSocket when there is one', async () => {
    if (typeof globalThis.WebSocket !== 'function') {
      assert.equal(process.env.EXPECT_GLOBAL_WEBSOCKET ?? '', '', 'the wrapper expected a global WebSocket');
      assert.throws(() => admin.executions.events(), (e) => e instanceof EnableDRMError && /WebSocket/.test(e.message));
      return;
    }
    await watchOneExecution(admin, seeded);
  });

  it('uses a WebSocket implementation passed in by the caller', async () => {
    const client = new EnableDRMClient({ baseURL: BASE_URL, token: admin.token, WebSocket: MiniWebSocket });
    const execution = await watchOneExecution(client, seeded);
    // an execution filter drops other executions' events
    const stream = client.executions.events({ executionSerial: execution.executionSerial, timeout: 1000 });
    await stream.ready;
    assert.deepEqual(stream.filters, { executionSerial: execution.executionSerial });
    const other = await client.jobs.execute(seeded.job.jobSerial);
    await client.executions.wait(other.executionSerial, { timeout: 30000 }); // all its events are out by now
    await assert.rejects(stream.next(), WaitTimeout);
    stream.close();
  });

  it('refuses bad filters and bad tokens', async () => {
    const WebSocket = globalThis.WebSocket ?? MiniWebSocket;
    const client = new EnableDRMClient({ baseURL: BASE_URL, token: admin.token, WebSocket });
    await assert.rejects(client.executions.events({ jobSerial: 'J2025' }).ready,
      (e) => e instanceof ValidationError && e.details.field === 'job_serial' && e.details.received === 'J2025');
    const bad = new EnableDRMClient({ baseURL: BASE_URL, token: 'not-a-jwt', WebSocket });
    await assert.rejects(bad.executions.events().ready, Unauthorized);
    const anonymous = new EnableDRMClient({ baseURL: BASE_URL, WebSocket });
    assert.throws(() => anonymous.executions.events(), Unauthorized);
  });

  it('reports the server closing an unauthenticated socket with 1008 (passed-in WebSocket, no precheck)', async () => {
    // the SDK checks the token over HTTP first; here straight at the socket, as a browser would see it
    const { EventStream } = await import('../src/events.js');
    const url = `${BASE_URL.replace(/^http/, 'ws')}/ws/executions`;
    const stream = new EventStream({ url, token: 'not-a-jwt', WebSocket: MiniWebSocket, connectTimeout: 15000 });
    await assert.rejects(stream.ready, (e) => e instanceof Unauthorized && e.details.closeCode === 1008);
  });
});
