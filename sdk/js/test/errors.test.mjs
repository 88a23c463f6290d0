// The error classes the live server answers (and 429 from the rate-limited server, with no retries).
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import {
  ApiError, BadRequest, EnableDRMClient, EnableDRMError, MethodNotAllowed, NotFound, PayloadTooLarge, RateLimited, ValidationError,
} from '../src/index.js';
import { LIMITED_BASE_URL, LIMITED_TOKEN, adminClient } from '../test-support/live.mjs';

describe('error classes from the live server', () => {
  let admin;
  before(async () => {
    admin = await adminClient();
  });

  const cases = [
    ['bad_request', 400, BadRequest, (c) => c.jobs.list({ perPage: 0 })],
    ['not_found', 404, NotFound, (c) => c.request('GET', '/no-such-route')],
    ['method_not_allowed', 405, MethodNotAllowed, (c) => c.request('DELETE', '/executions/search')],
    ['validation_error', 422, ValidationError, (c) => c.jobs.create({ name: 'x', actions: [] })],
    ['payload_too_large', 413, PayloadTooLarge, (c) => c.executions.bulk(Array(1000).fill('J20250001.0001'.repeat(100)))],
  ];
  for (const [code, status, Cls, call] of cases) {
    it(`${status} ${code} is ${Cls.name}`, async () => {
      await assert.rejects(call(admin), (e) => e instanceof Cls && e instanceof ApiError && e instanceof EnableDRMError
        && e.status === status && e.error === code && typeof e.message === 'string' && e.message.length > 0
        && typeof e.details === 'object');
    });
  }
});

describe('rate limiting', () => {
  it('throws RateLimited with retryAfter when retries are off', async () => {
    const client = new EnableDRMClient({ baseURL: LIMITED_BASE_URL, token: LIMITED_TOKEN, maxRetries: 0 });
    let error = null;
    for (let i = 0; i < 10 && !error; i += 1) { // 3 a minute; a minute boundary may grant 3 more
      error = await client.auth.me().then(() => null, (e) => e);
    }
    assert.ok(error instanceof RateLimited, String(error));
    assert.equal(error.status, 429);
    assert.equal(error.error, 'rate_limited');
    assert.ok(error.retryAfter > 0 && error.retryAfter <= 60, `retryAfter ${error.retryAfter}`);
    assert.ok(error.headers['retry-after']);
  });
});
