// targets (CRUD, performance, history) and credentials against the live server.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Conflict, Forbidden, NotFound, ValidationError } from '../src/index.js';
import { adminClient, clientFor, seed, unique } from '../test-support/live.mjs';

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

describe('credentials', () => {
  let admin;
  before(async () => {
    admin = await adminClient();
  });

  it('creates, reads, updates, lists and deletes; secrets never come back', async () => {
    const name = unique('js-cred');
    const cred = await admin.credentials.create({ name, username: 'deploy', authType: 'password', password: 's3cret-pass', description: 'sdk', allowedHosts: ['10.0.0.0/8'] });
    assert.equal(cred.name, name);
    assert.deepEqual(cred.allowedHosts, ['10.0.0.0/8']);
    assert.equal(cred.authType, 'password');
    assert.equal(cred.hasPassphrase, false);
    assert.ok(!JSON.stringify(cred).includes('s3cret-pass'));
    assert.equal((await admin.credentials.get(cred.id)).username, 'deploy');
    const changed = await admin.credentials.update(cred.id, { username: 'ops', description: null });
    assert.equal(changed.username, 'ops');
    assert.equal(changed.description, null);
    assert.ok((await collect(admin.credentials.iterate({ perPage: 1 }))).some((c) => c.id === cred.id));
    assert.ok((await admin.credentials.list({ perPage: 50, sort: 'name', order: 'asc' })).data.some((c) => c.id === cred.id));
    await assert.rejects(admin.credentials.create({ name: unique('js-key'), username: 'u', authType: 'key' }), ValidationError);
    const target = await admin.targets.create({ name: unique('js-ssh'), ipAddress: '192.0.2.20', credentialId: cred.id });
    await assert.rejects(admin.credentials.delete(cred.id), Conflict);
    await admin.targets.delete(target.id);
    await admin.credentials.delete(cred.id);
    await assert.rejects(admin.credentials.get(cred.id), NotFound);
  });
});

describe('targets', () => {
  let admin;
  let seeded;
  before(async () => {
    admin = await adminClient();
    seeded = await seed(admin, 'js-targets');
  });

  it('creates, filters, updates, archives', async () => {
    const tag = unique('tag');
    const cred = await admin.credentials.create({ name: unique('js-cred'), username: 'deploy', authType: 'password', password: 'pw-123456' });
    const first = await admin.targets.create({ name: unique('js-t'), hostname: 'host-a.example.com', port: 2222, tags: [tag, 'web'], credentialId: cred.id });
    const second = await admin.targets.create({ name: unique('js-t'), ipAddress: '192.0.2.21', tags: [tag], description: 'second', credentialId: cred.id });
    assert.match(first.targetSerial, /^T\d{8,}$/);
    assert.equal(first.port, 2222);
    assert.equal(first.connection, 'ssh');
    assert.equal(first.credentialId, cred.id);
    assert.deepEqual(await admin.targets.get(first.targetSerial), await admin.targets.get(first.id));
    const page = await admin.targets.list({ tag, sort: 'name', order: 'asc', perPage: 1 });
    assert.equal(page.pagination.total, 2);
    assert.equal(page.pagination.hasNext, true);
    assert.deepEqual(new Set((await collect(admin.targets.iterate({ tag, perPage: 1 }))).map((t) => t.id)), new Set([first.id, second.id]));
    const updated = await admin.targets.update(second.targetSerial, { description: 'changed', enabled: false });
    assert.equal(updated.description, 'changed');
    assert.equal(updated.enabled, false);
    assert.deepEqual((await admin.targets.list({ tag, enabled: false })).data.map((t) => t.id), [second.id]);
    await assert.rejects(admin.targets.create({ name: first.name, hostname: 'x.example.com', credentialId: cred.id }), Conflict);
    await assert.rejects(admin.targets.create({ name: unique('js-t'), ipAddress: 'nope', credentialId: cred.id }),
      (e) => e instanceof ValidationError && e.details.field === 'ip_address');
    assert.equal((await admin.targets.resetHostKey(first.id)).hostKeyFingerprint, null);
    await admin.targets.delete(second.targetSerial);
    assert.deepEqual((await collect(admin.targets.iterate({ tag }))).map((t) => t.id), [first.id]);
    assert.ok((await admin.targets.get(second.targetSerial)).archivedAt);
    await assert.rejects(admin.targets.get('T20999999'), NotFound);
  });

  it('reports performance with camelCase fields', async () => {
    const serial = seeded.target.targetSerial;
    const performance = await admin.targets.getPerformance(serial, { days: 30 });
    assert.equal(performance.targetSerial, serial);
    assert.equal(performance.periodDays, 30);
    assert.equal(performance.successRate, 100);
    assert.equal(performance.totalExecutions, 1);
    assert.equal(performance.successfulExecutions, 1);
    assert.equal(performance.recentExecutions[0].executionSerial, seeded.execution.executionSerial);
    assert.equal((await admin.targets.getPerformance(serial)).periodDays, 30);
    await assert.rejects(admin.targets.getPerformance('bad'), (e) => e instanceof ValidationError && e.details.field === 'target_serial');
  });

  it('pages through history', async () => {
    const serial = seeded.target.targetSerial;
    await admin.executions.wait((await admin.jobs.execute(seeded.job.jobSerial)).executionSerial, { timeout: 30000, pollInterval: 100 });
    const history = await admin.targets.history(serial, { limit: 1, offset: 0 });
    assert.equal(history.targetSerial, serial);
    assert.equal(history.total, 2);
    assert.equal(history.executions.length, 1);
    assert.equal(history.executions[0].jobName, seeded.job.name);
    assert.equal(history.executions[0].exitCode, 0);
    const all = await collect(admin.targets.iterHistory(serial, { pageSize: 1 }));
    assert.equal(all.length, 2);
  });

  it('keeps local targets for admins', async () => {
    const username = unique('js-operator');
    await admin.users.create({ username, password: 'js-password-123', role: 'operator' });
    const operator = await clientFor(username, 'js-password-123');
    await assert.rejects(operator.targets.create({ name: unique('js-local'), connection: 'local' }), Forbidden);
  });
});
