// Shared helpers for the live tests: the server the Python wrapper (tests/sdk/test_js_sdk.py) started is
// given by BASE_URL, ADMIN_USERNAME and ADMIN_PASSWORD; the rate-limited one by LIMITED_BASE_URL and
// LIMITED_TOKEN. Without them the live tests fail at once: they are never skipped.
import crypto from 'node:crypto';
import { EnableDRMClient } from '../src/index.js';

export const BASE_URL = process.env.BASE_URL ?? '';
export const ADMIN_USERNAME = process.env.ADMIN_USERNAME ?? 'admin';
export const ADMIN_PASSWORD = process.env.ADMIN_PASSWORD ?? '';
export const LIMITED_BASE_URL = process.env.LIMITED_BASE_URL ?? '';
export const LIMITED_TOKEN = process.env.LIMITED_TOKEN ?? '';

if (!BASE_URL || !ADMIN_PASSWORD || !LIMITED_BASE_URL || !LIMITED_TOKEN) {
  throw new Error('live tests need BASE_URL, ADMIN_USERNAME, ADMIN_PASSWORD, LIMITED_BASE_URL and LIMITED_TOKEN '
    + '(tests/sdk/test_js_sdk.py starts the servers and sets them)');
}

export const RFC3339_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

export function unique(prefix) {
  return `${prefix}-${crypto.randomBytes(4).toString('hex')}`;
}

export function echoAction(text = 'hello') {
  return { actionType: 'command', actionName: 'say', actionParameters: { command: `echo ${text}` } };
}

export async function adminClient(options = {}) {
  const client = new EnableDRMClient({ baseURL: BASE_URL, ...options });
  await client.auth.login(ADMIN_USERNAME, ADMIN_PASSWORD);
  return client;
}

export async function clientFor(username, password, options = {}) {
  const client = new EnableDRMClient({ baseURL: BASE_URL, ...options });
  await client.auth.login(username, password);
  return client;
}

/** A local target and an echo job with one completed execution, made through the SDK. */
export async function seed(client, prefix = 'js') {
  const target = await client.targets.create({ name: unique(`${prefix}-local`), connection: 'local', tags: ['sdk', 'js'] });
  const job = await client.jobs.create({ name: unique(`${prefix}-echo`), actions: [echoAction('hello')], targetIds: [target.id] });
  const started = await client.jobs.execute(job.jobSerial);
  const execution = await client.executions.wait(started.executionSerial, { timeout: 30000, pollInterval: 100 });
  return { target, job, execution };
}
