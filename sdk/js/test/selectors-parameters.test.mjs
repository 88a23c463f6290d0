// Target selectors and job parameters against the live server: sent, shown, and seen by the actions.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { ValidationError, camelize, snakify } from '../src/index.js';
import { adminClient, unique } from '../test-support/live.mjs';

describe('selectors and parameters', () => {
  let admin;
  before(async () => {
    admin = await adminClient();
  });

  it('keeps parameter names as written both ways', () => {
    assert.deepEqual(snakify({ parameters: { VERSION: '1', BUILD_2: 'x' } }), { parameters: { VERSION: '1', BUILD_2: 'x' } });
    assert.deepEqual(camelize({ parameters: { BUILD_2: 'x' }, target_selector: { tags_all: ['a'] } }),
      { parameters: { BUILD_2: 'x' }, targetSelector: { tagsAll: ['a'] } });
    // declarations are a list of objects: their keys convert as usual, the names are values
    assert.deepEqual(snakify({ parameters: [{ name: 'A_B' }] }), { parameters: [{ name: 'A_B' }] });
  });

  it('creates a job by selector with parameters and runs it with values', async () => {
    const tag = unique('js-sel');
    const chosen = await admin.targets.create({ name: unique('js-sel-a'), connection: 'local', tags: [tag, 'js'] });
    await admin.targets.create({ name: unique('js-sel-b'), connection: 'local', tags: ['js'] });
    const job = await admin.jobs.create({
      name: unique('js-params'),
      actions: [{ actionType: 'command', actionName: 'show',
        actionParameters: { command: 'printf "%s|%s|%s" "$OC_PARAM_VERSION" "$OC_PARAM_BUILD_2" "$OC_PARAM_KEY"' } }],
      targetSelector: { tagsAll: [tag] },
      parameters: [{ name: 'VERSION', required: true, pattern: '[0-9.]+' }, { name: 'BUILD_2', default: 'b2' },
        { name: 'KEY', secret: true }],
    });
    assert.deepEqual(job.targetIds, []);
    assert.deepEqual(job.targetSelector.tagsAll, [tag]);
    assert.deepEqual(job.parameters.map((p) => p.name), ['VERSION', 'BUILD_2', 'KEY']);
    await assert.rejects(admin.jobs.execute(job.jobSerial, { parameters: { VERSION: 'one' } }),
      (err) => err instanceof ValidationError && err.details.field === 'parameters.VERSION');
    const execution = await admin.jobs.execute(job.jobSerial, { parameters: { VERSION: '1.2', KEY: "$(id) 's3cret'" } });
    assert.deepEqual(execution.targetSelector.tagsAll, [tag]);
    assert.deepEqual(execution.branches.map((b) => b.targetId), [chosen.id]);
    assert.deepEqual(execution.parameters, { VERSION: '1.2', BUILD_2: 'b2', KEY: '****' });
    const done = await admin.executions.wait(execution.executionSerial, { timeout: 30000, pollInterval: 100 });
    assert.equal(done.status, 'completed');
    const branch = await admin.executions.getBranch(done.branches[0].branchSerial);
    assert.equal(branch.steps[0].stdout, '1.2|b2|****'); // the secret reached the action, and its output masks it
    const other = await admin.jobs.execute(job.jobSerial, { targetSelector: { tagsAny: ['js'], name: 'js-sel-*' },
      parameters: { VERSION: '2' } });
    assert.equal(other.branches.length, 2);
    await admin.executions.wait(other.executionSerial, { timeout: 30000, pollInterval: 100 });
    const updated = await admin.jobs.update(job.id, { targetIds: [chosen.id], parameters: [] });
    assert.equal(updated.targetSelector, null);
    assert.deepEqual(updated.parameters, []);
  });
});
