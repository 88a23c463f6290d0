// jobs, executions and analytics against the live server.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { ApiError, BadRequest, Conflict, Forbidden, NotFound, ValidationError, WaitTimeout } from '../src/index.js';
import { RFC3339_Z, adminClient, clientFor, echoAction, seed, unique } from '../test-support/live.mjs';

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

describe('jobs', () => {
  let admin;
  let seeded;
  before(async () => {
    admin = await adminClient();
    seeded = await seed(admin, 'js-jobs');
  });

  it('creates, reads, updates, lists, iterates and archives', async () => {
    const name = unique('js-job');
    const job = await admin.jobs.create({
      name,
      jobType: 'command',
      targetIds: [seeded.target.id],
      actions: [echoAction('a'), { actionType: 'script', actionName: 's', actionParameters: { script: 'echo b', interpreter: 'sh' }, timeoutSeconds: 30, continueOnError: true }],
    });
    assert.equal(job.status, 'ready');
    assert.equal(job.executionCount, 0);
    assert.deepEqual(job.targetIds, [seeded.target.id]);
    assert.equal(job.actions[0].actionParameters.command, 'echo a');
    assert.equal(job.actions[1].timeoutSeconds, 30);
    assert.equal(job.actions[1].continueOnError, true);
    assert.deepEqual(await admin.jobs.get(job.jobSerial), await admin.jobs.get(job.id));
    const updated = await admin.jobs.update(job.jobSerial, { description: 'updated', actions: [echoAction('c')] });
    assert.equal(updated.description, 'updated');
    assert.equal(updated.actions.length, 1);
    const page = await admin.jobs.list({ page: 1, perPage: 1, sort: 'created_at', order: 'desc' });
    assert.equal(page.pagination.page, 1);
    assert.ok(page.pagination.total >= 2 && page.pagination.hasNext);
    assert.deepEqual((await collect(admin.jobs.iterate({ name, perPage: 1 }))).map((j) => j.id), [job.id]);
    const ids = new Set((await collect(admin.jobs.iterate({ perPage: 1 }))).map((j) => j.id));
    assert.ok(ids.has(job.id) && ids.has(seeded.job.id));
    await admin.jobs.delete(job.jobSerial);
    assert.ok(!(await collect(admin.jobs.iterate())).some((j) => j.id === job.id));
    assert.ok((await admin.jobs.get(job.jobSerial)).archivedAt);
    await assert.rejects(admin.jobs.execute(job.jobSerial), (e) => e instanceof ApiError && [404, 409].includes(e.status));
  });

  it('schedules in the future only', async () => {
    await assert.rejects(admin.jobs.create({ name: unique('js-past'), actions: [echoAction()], targetIds: [seeded.target.id], scheduledAt: new Date(Date.now() - 3600e3) }), ValidationError);
    const future = await admin.jobs.create({ name: unique('js-future'), actions: [echoAction()], targetIds: [seeded.target.id], scheduledAt: new Date(Date.now() + 86400e3) });
    assert.equal(future.status, 'scheduled');
    assert.match(future.scheduledAt, RFC3339_Z);
    await admin.jobs.delete(future.id);
  });

  it('sends, shows and removes a cron schedule', async () => {
    const schedule = { cron: '*/5 * * * *', timezone: 'Europe/Berlin' };
    const job = await admin.jobs.create({ name: unique('js-cron'), actions: [echoAction()], targetIds: [seeded.target.id], schedule });
    try {
      assert.equal(job.status, 'scheduled');
      assert.deepEqual(job.schedule, schedule);
      assert.match(job.nextRunAt, RFC3339_Z);
      const tick = new Date(job.nextRunAt);
      assert.ok(tick > new Date() && tick - new Date() <= 5 * 60e3 && tick.getUTCMinutes() % 5 === 0);
      assert.deepEqual((await admin.jobs.get(job.jobSerial)).schedule, schedule);
      const hourly = await admin.jobs.update(job.id, { schedule: { cron: '0 * * * *' } });
      assert.deepEqual(hourly.schedule, { cron: '0 * * * *', timezone: 'UTC' });
      await assert.rejects(admin.jobs.update(job.id, { schedule: { cron: '0 * * * *', timezone: 'Nowhere/Land' } }),
        (e) => e instanceof ValidationError && e.details.field === 'schedule.timezone');
      const removed = await admin.jobs.update(job.id, { schedule: null });
      assert.equal(removed.status, 'ready');
      assert.equal(removed.schedule, null);
      assert.equal(removed.nextRunAt, null);
    } finally {
      await admin.jobs.delete(job.id);
    }
  });

  it('executes and lists executions newest first', async () => {
    const execution = await admin.jobs.execute(seeded.job.jobSerial, { targetIds: [seeded.target.id] });
    assert.match(execution.executionSerial, /^J\d{8}\.\d{4}$/);
    assert.equal(execution.branches[0].branchSerial, `${execution.executionSerial}.0001`);
    assert.equal(execution.branches[0].branchId, '001');
    await admin.executions.wait(execution.executionSerial, { timeout: 30000, pollInterval: 100 });
    const latest = await admin.jobs.executions(seeded.job.jobSerial, { limit: 1 });
    assert.equal(latest.length, 1);
    assert.equal(latest[0].executionSerial, execution.executionSerial);
    const every = await collect(admin.jobs.iterExecutions(seeded.job.id, { pageSize: 1 }));
    assert.ok(every.length >= 2);
    assert.deepEqual(every.map((e) => e.executionNumber), every.map((e) => e.executionNumber).sort((a, b) => b - a));
  });

  it('lets viewers read but not write', async () => {
    const username = unique('js-viewer');
    await admin.users.create({ username, password: 'js-password-123', role: 'viewer' });
    const viewer = await clientFor(username, 'js-password-123');
    await assert.rejects(viewer.jobs.create({ name: unique('js-nope'), actions: [echoAction()] }), Forbidden);
    assert.equal((await viewer.jobs.get(seeded.job.jobSerial)).id, seeded.job.id);
  });
});

describe('executions', () => {
  let admin;
  let seeded;
  before(async () => {
    admin = await adminClient();
    seeded = await seed(admin, 'js-exec');
  });

  it('looks up executions and branches by serial', async () => {
    const found = await admin.executions.getBySerial(seeded.execution.executionSerial);
    assert.equal(found.status, 'completed');
    assert.equal(found.job.jobSerial, seeded.job.jobSerial);
    assert.equal(found.job.name, seeded.job.name);
    assert.match(found.completedAt, RFC3339_Z);
    const branch = await admin.executions.getBranch(found.branches[0].branchSerial);
    assert.equal(branch.executionSerial, found.executionSerial);
    assert.equal(branch.resultOutput, 'hello\n');
    assert.equal(branch.exitCode, 0);
    assert.equal(branch.target.targetSerial, seeded.target.targetSerial);
    assert.equal(branch.steps[0].stdout, 'hello\n');
    await assert.rejects(admin.executions.getBySerial('invalid_serial'), (e) => e instanceof ValidationError
      && e.details.field === 'execution_serial' && e.details.expectedFormat === 'J20250001.0001' && e.details.received === 'invalid_serial');
    await assert.rejects(admin.executions.getBySerial(`${seeded.job.jobSerial}.9999`), NotFound);
  });

  it('reads a branch\'s output while it runs and after it ended', async () => {
    const gate = path.join('/tmp', unique('opsc-js-gate')); // the command waits for it (the server is local)
    let live;
    let branchSerial;
    let started;
    try {
      const job = await admin.jobs.create({
        name: unique('js-live'),
        targetIds: [seeded.target.id],
        actions: [{ actionType: 'command', actionName: 'talk', timeoutSeconds: 30, actionParameters: {
          command: `echo one; while [ ! -e ${gate} ]; do sleep 0.05; done; echo two; echo err >&2` } }],
      });
      started = await admin.jobs.execute(job.jobSerial);
      branchSerial = started.branches[0].branchSerial;
      const deadline = Date.now() + 30000;
      for (;;) {
        live = await admin.executions.getOutput(branchSerial);
        if (live.data || Date.now() > deadline) break;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.deepEqual(live, { branchSerial, stream: 'stdout', offset: 0, data: 'one\n', nextOffset: 4, running: true,
        truncated: false });
    } finally {
      fs.writeFileSync(gate, '');
    }
    await admin.executions.wait(started.executionSerial, { timeout: 30000, pollInterval: 100 });
    fs.unlinkSync(gate);
    const rest = await admin.executions.getOutput(branchSerial, { offset: live.nextOffset });
    assert.deepEqual([rest.offset, rest.data, rest.nextOffset, rest.running], [4, 'two\n', 8, false]);
    assert.equal((await admin.executions.getOutput(branchSerial, { stream: 'stderr' })).data, 'err\n');
    await assert.rejects(admin.executions.getOutput(branchSerial, { stream: 'stdin' }), BadRequest);
    await assert.rejects(admin.executions.getOutput(`${seeded.job.jobSerial}.9999.0001`), NotFound);
  });

  it('searches and looks up in bulk', async () => {
    const serial = seeded.execution.executionSerial;
    const branchSerial = seeded.execution.branches[0].branchSerial;
    const results = await admin.executions.search(seeded.job.jobSerial, { type: 'execution', limit: 10 });
    assert.equal(results.type, 'execution');
    assert.ok(results.results.some((r) => r.serial === serial));
    const byName = await admin.executions.search(seeded.job.name.toUpperCase());
    assert.deepEqual(new Set(byName.results.map((r) => r.type)), new Set(['execution', 'branch']));
    const bulk = await admin.executions.bulk([branchSerial, 'J20990001.0001', 'garbage', serial]);
    assert.deepEqual(bulk.results.map((r) => r.found), [true, false, false, true]);
    assert.equal(bulk.results[0].data.targetSerialRef, seeded.target.targetSerial);
    assert.equal(bulk.results[3].data.jobSerial, seeded.job.jobSerial);
    assert.deepEqual(bulk.notFound, ['J20990001.0001', 'garbage']);
  });

  it('cancels, and times out waiting', async () => {
    const target = await admin.targets.create({ name: unique('js-local-sleep'), connection: 'local' });
    const job = await admin.jobs.create({ name: unique('js-sleep'), targetIds: [target.id], actions: [{ actionType: 'command', actionName: 'sleep', actionParameters: { command: 'sleep 30' } }] });
    const execution = await admin.jobs.execute(job.id);
    await assert.rejects(admin.executions.wait(execution.executionSerial, { timeout: 300, pollInterval: 100 }), WaitTimeout);
    const cancelled = await admin.executions.cancel(execution.executionSerial);
    assert.equal(cancelled.executionSerial, execution.executionSerial);
    const final = await admin.executions.wait(execution.executionSerial, { timeout: 20000, pollInterval: 100 });
    assert.equal(final.status, 'cancelled');
    assert.ok(final.branches.every((b) => b.status === 'cancelled'));
  });

  it('retries only what failed, and an idempotency key makes a call safe to repeat', async () => {
    // two local targets race to create one directory: one branch completes, the other fails
    const targets = [];
    for (let i = 0; i < 2; i += 1) targets.push(await admin.targets.create({ name: unique('js-local-retry'), connection: 'local' }));
    const lock = `/tmp/${unique('js-retry-lock')}`;
    const job = await admin.jobs.create({ name: unique('js-retry'), targetIds: targets.map((t) => t.id), actions: [{ actionType: 'command', actionName: 'take-lock', actionParameters: { command: `mkdir ${lock}` } }] });
    const key = unique('js-key');
    const first = await admin.jobs.execute(job.jobSerial, { idempotencyKey: key });
    const again = await admin.jobs.execute(job.jobSerial, { idempotencyKey: key });
    assert.equal(again.executionSerial, first.executionSerial);
    assert.equal(again.retryOf, null);
    await assert.rejects(admin.jobs.execute(job.jobSerial, { targetIds: [targets[0].id], idempotencyKey: key }),
      (e) => e instanceof ValidationError && e.details.field === 'Idempotency-Key');
    const parent = await admin.executions.wait(first.executionSerial, { timeout: 30000, pollInterval: 100 });
    assert.deepEqual(parent.branches.map((b) => b.status).sort(), ['completed', 'failed']);
    const failed = parent.branches.filter((b) => b.status === 'failed').map((b) => b.targetId);
    const retryKey = unique('js-retry-key');
    const retry = await admin.executions.retry(first.executionSerial, { idempotencyKey: retryKey });
    assert.equal(retry.trigger, 'retry');
    assert.equal(retry.retryOf, first.executionSerial);
    assert.deepEqual(retry.retries, []);
    assert.deepEqual(retry.branches.map((b) => b.targetId), failed);
    assert.equal((await admin.executions.retry(first.executionSerial, { idempotencyKey: retryKey })).executionSerial, retry.executionSerial);
    const everything = await admin.executions.retry(first.executionSerial, { only: 'all' });
    assert.deepEqual(everything.branches.map((b) => b.targetId).sort(), targets.map((t) => t.id).sort());
    assert.deepEqual((await admin.executions.getBySerial(first.executionSerial)).retries, [retry.executionSerial, everything.executionSerial]);
    await assert.rejects(admin.executions.retry(first.executionSerial, { only: 'some' }), (e) => e instanceof ValidationError && e.details.field === 'only');
  });

  it('brakes a rollout: max_concurrency, max_errors, an exclusive target', async () => {
    const targets = [];
    for (let i = 0; i < 3; i += 1) targets.push(await admin.targets.create({ name: unique('js-rollout'), connection: 'local', maxConcurrentRuns: 1 }));
    assert.equal(targets[0].maxConcurrentRuns, 1);
    const job = await admin.jobs.create({ name: unique('js-rollout'), targetIds: targets.map((t) => t.id), actions: [{ actionType: 'command', actionName: 'fail', actionParameters: { command: 'exit 7' } }] });
    const started = await admin.jobs.execute(job.jobSerial, { maxConcurrency: '1', maxErrors: '0' });
    assert.equal(started.maxConcurrency, '1');
    assert.equal(started.maxErrors, '0');
    const done = await admin.executions.wait(started.executionSerial, { timeout: 30000, pollInterval: 100 });
    assert.equal(done.status, 'failed');
    assert.match(done.stopReason, /rollout stopped/);
    assert.deepEqual(done.branches.map((b) => b.status).sort(), ['failed', 'skipped', 'skipped']);
    await assert.rejects(admin.jobs.execute(job.jobSerial, { maxConcurrency: '0' }), (e) => e instanceof ValidationError);
  });

  it('refuses to retry a running execution', async () => {
    const target = await admin.targets.create({ name: unique('js-local-sleep'), connection: 'local' });
    const job = await admin.jobs.create({ name: unique('js-sleep'), targetIds: [target.id], actions: [{ actionType: 'command', actionName: 'sleep', actionParameters: { command: 'sleep 30' } }] });
    const execution = await admin.jobs.execute(job.id);
    await assert.rejects(admin.executions.retry(execution.executionSerial), (e) => e instanceof Conflict && /still running/.test(e.message));
    await admin.executions.cancel(execution.executionSerial);
    await admin.executions.wait(execution.executionSerial, { timeout: 20000, pollInterval: 100 });
    const retry = await admin.executions.retry(execution.executionSerial);
    assert.equal(retry.retryOf, execution.executionSerial);
    await admin.executions.cancel(retry.executionSerial);
  });
});

describe('analytics', () => {
  let admin;
  let seeded;
  before(async () => {
    admin = await adminClient();
    seeded = await seed(admin, 'js-analytics');
  });

  it('reports execution analytics and job metrics', async () => {
    const hourly = await admin.analytics.executions({ period: '24h', groupBy: 'hour' });
    assert.equal(hourly.period, '24h');
    assert.equal(hourly.groupBy, 'hour');
    assert.ok([24, 25].includes(hourly.data.length));
    assert.equal(hourly.data.reduce((n, b) => n + b.executions, 0), hourly.totalExecutions);
    assert.ok('successRate' in hourly.data[0]);
    const defaults = await admin.analytics.executions();
    assert.equal(defaults.period, '7d');
    assert.equal(defaults.groupBy, 'day');
    const metrics = await admin.analytics.jobMetrics(seeded.job.jobSerial, { period: '30d' });
    assert.equal(metrics.jobSerial, seeded.job.jobSerial);
    assert.equal(metrics.totalExecutions, 1);
    assert.equal(metrics.successRate, 100);
    assert.equal(metrics.targetPerformance[0].targetSerial, seeded.target.targetSerial);
    await assert.rejects(admin.analytics.executions({ period: '1y' }), (e) => e instanceof BadRequest && e.status === 400);
    await assert.rejects(admin.analytics.jobMetrics('J20999999'), NotFound);
  });
});
