// auth and users against the live server.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Conflict, EnableDRMClient, Forbidden, NotFound, Unauthorized, ValidationError } from '../src/index.js';
import { ADMIN_PASSWORD, ADMIN_USERNAME, BASE_URL, RFC3339_Z, adminClient, clientFor, unique } from '../test-support/live.mjs';

describe('auth', () => {
  it('logs in, reads me, refreshes and logs out', async () => {
    const client = new EnableDRMClient({ baseURL: `${BASE_URL}/api` });
    assert.equal(client.baseURL, BASE_URL);
    const token = await client.auth.login(ADMIN_USERNAME, ADMIN_PASSWORD);
    assert.equal(token.tokenType, 'Bearer');
    assert.ok(token.expiresIn > 0 && token.refreshToken);
    assert.equal(client.token, token.accessToken);
    assert.equal(client.refreshToken, token.refreshToken);
    const me = await client.auth.me();
    assert.equal(me.username, ADMIN_USERNAME);
    assert.equal(me.role, 'admin');
    assert.equal(me.isActive, true);
    assert.match(me.createdAt, RFC3339_Z);
    const refreshed = await client.auth.refresh();
    assert.equal(client.token, refreshed.accessToken);
    assert.equal((await client.auth.me()).id, me.id);
    client.auth.logout();
    assert.equal(client.token, null);
    await assert.rejects(client.auth.me(), (e) => e instanceof Unauthorized && e.status === 401 && e.error === 'unauthorized');
  });

  it('rejects a wrong password with Unauthorized', async () => {
    const client = new EnableDRMClient({ baseURL: BASE_URL });
    await assert.rejects(client.auth.login(ADMIN_USERNAME, 'wrong-password'), Unauthorized);
    assert.equal(client.token, null);
  });

  it('uses a token given to the constructor', async () => {
    const admin = await adminClient();
    const client = new EnableDRMClient({ baseURL: BASE_URL, token: admin.token });
    assert.equal((await client.auth.me()).username, ADMIN_USERNAME);
  });
});

describe('users', () => {
  let admin;
  before(async () => {
    admin = await adminClient();
  });

  it('creates, reads, updates, lists and iterates users', async () => {
    const username = unique('js-user');
    const user = await admin.users.create({ username, password: 'js-password-123', role: 'viewer' });
    assert.equal(user.username, username);
    assert.equal(user.role, 'viewer');
    assert.deepEqual(await admin.users.get(user.id), user);
    const updated = await admin.users.update(user.id, { role: 'operator', isActive: false });
    assert.equal(updated.role, 'operator');
    assert.equal(updated.isActive, false);
    const page = await admin.users.list({ page: 1, perPage: 2, sort: 'id', order: 'asc' });
    assert.ok(page.data.length <= 2);
    assert.equal(page.pagination.perPage, 2);
    const everyone = [];
    for await (const u of admin.users.iterate({ perPage: 2 })) everyone.push(u);
    assert.equal(everyone.length, page.pagination.total);
    assert.ok(everyone.some((u) => u.username === username));
    await assert.rejects(clientFor(username, 'js-password-123'), Unauthorized); // disabled
    await assert.rejects(admin.users.create({ username, password: 'js-password-123' }), (e) => e instanceof Conflict && e.status === 409);
    await assert.rejects(admin.users.create({ username: unique('js-short'), password: 'short' }),
      (e) => e instanceof ValidationError && e.status === 422 && e.details.field === 'password');
    await assert.rejects(admin.users.get(999999), NotFound);
  });

  it('is forbidden to non-admins', async () => {
    const username = unique('js-viewer');
    await admin.users.create({ username, password: 'js-password-123', role: 'viewer' });
    const viewer = await clientFor(username, 'js-password-123');
    await assert.rejects(viewer.users.list(), (e) => e instanceof Forbidden && e.status === 403 && e.details.role === 'viewer');
  });
});
