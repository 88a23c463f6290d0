// The resource groups of EnableDRMClient. Requests take camelCase and send snake_case; responses come back camelCase.
import { WaitTimeout } from './errors.js';
import { EventStream, eventsURL } from './events.js';
import { segment } from './http.js';

export const TERMINAL_EXECUTION_STATUSES = Object.freeze(['completed', 'failed', 'cancelled']);
export const TERMINAL_BRANCH_STATUSES = Object.freeze(['completed', 'failed', 'timed_out', 'cancelled']);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The Idempotency-Key header of execute and retry, when a key is given. */
const idempotencyHeaders = (key) => (key === undefined || key === null ? {} : { 'Idempotency-Key': String(key) });

class Resource {
  constructor(http, client) {
    this._http = http;
    this._client = client;
  }

  /** Every item of a paginated list, page after page, until hasNext is false. */
  async *_iterate(list, params = {}) {
    const { perPage = 100, page: first = 1, ...rest } = params;
    for (let page = first; ; page += 1) {
      const result = await list({ ...rest, page, perPage });
      yield* result.data;
      if (!result.pagination?.hasNext || result.data.length === 0) return;
    }
  }
}

export class AuthResource extends Resource {
  /** Exchange a username and password for tokens; the client then uses the access token. */
  async login(username, password) {
    const token = await this._http.json('POST', '/auth/login', { body: { username, password }, auth: false });
    this._http.token = token.accessToken;
    this._http.refreshToken = token.refreshToken ?? null;
    return token;
  }

  /** A new access token from the refresh token (the one from login() by default); the client then uses it. */
  async refresh(refreshToken = null) {
    const bearer = refreshToken ?? this._http.refreshToken;
    if (!bearer) throw new TypeError('no refresh token: call auth.login() first or pass a refresh token');
    const token = await this._http.json('POST', '/auth/refresh', { token: bearer });
    this._http.token = token.accessToken;
    return token;
  }

  /** The authenticated user. */
  me() {
    return this._http.json('GET', '/auth/me');
  }

  /** Forget the tokens held by this client (nothing is sent: tokens are stateless JWTs). */
  logout() {
    this._http.token = null;
    this._http.refreshToken = null;
  }
}

/** list / iterate / get / create / update on one collection path (`static path`). */
class CollectionResource extends Resource {
  /** One page: { page, perPage, sort, order, ...filters }. */
  list(params = {}) {
    return this._http.json('GET', this.constructor.path, { query: params });
  }

  /** Every item, page after page. */
  iterate(params = {}) {
    return this._iterate((p) => this.list(p), params);
  }

  /** One item by id (targets and jobs: or serial; archived ones too). */
  get(ref) {
    return this._http.json('GET', this._item(ref));
  }

  create(body) {
    return this._http.json('POST', this.constructor.path, { body });
  }

  /** Change the given fields (a job's actions and targetIds are replaced whole). */
  update(ref, fields) {
    return this._http.json('PATCH', this._item(ref), { body: fields });
  }

  _item(ref, suffix = '') {
    return `${this.constructor.path}/${segment(ref)}${suffix}`;
  }
}

class ArchivableResource extends CollectionResource {
  /** Delete a credential; archive a target or job: it leaves lists and cannot run, its history stays. */
  async delete(ref) {
    await this._http.request('DELETE', this._item(ref));
  }
}

/** create({ username, password, role: 'admin' | 'operator' | 'viewer' }); update(id, { password?, role?, isActive? }) */
export class UsersResource extends CollectionResource {
  static path = '/users';
}

/** create({ name, username, authType: 'key' | 'password', privateKey?, passphrase?, password?, description? }) */
export class CredentialsResource extends ArchivableResource {
  static path = '/credentials';
}

/**
 * list({ page, perPage, sort, order, name, tag, enabled, queue });
 * create({ name, ipAddress?, hostname?, port?, credentialId?, connection?: 'ssh' | 'local', tags?, queue?, enabled?, description? })
 */
export class TargetsResource extends ArchivableResource {
  static path = '/targets';

  resetHostKey(targetRef) {
    return this._http.json('POST', this._item(targetRef, '/reset-host-key'));
  }

  /** Branch success rate and durations over the last `days` days (server default 30), with the newest 10 branches. */
  getPerformance(targetSerial, { days } = {}) {
    return this._http.json('GET', this._item(targetSerial, '/performance'), { query: { days } });
  }

  /** Branches run on the target, newest first: { limit (1..100, default 20), offset }. */
  history(targetSerial, { limit, offset } = {}) {
    return this._http.json('GET', this._item(targetSerial, '/executions'), { query: { limit, offset } });
  }

  /** Every branch run on the target, newest first, fetching `pageSize` at a time. */
  async *iterHistory(targetSerial, { pageSize = 100 } = {}) {
    for (let offset = 0; ;) {
      const chunk = await this.history(targetSerial, { limit: pageSize, offset });
      yield* chunk.executions;
      offset += chunk.executions.length;
      if (chunk.executions.length === 0 || offset >= chunk.total) return;
    }
  }
}

/**
 * list({ page, perPage, sort, order, status, name, jobType });
 * create({ name, actions: [{ actionType, actionName, actionParameters: { command } }], targetIds?, description?, jobType?, scheduledAt?, schedule? })
 * (schedule: { cron: '0 9 * * 1-5', timezone?: 'Europe/Berlin' }; update(ref, { schedule: null }) removes it)
 * targetSelector?: { tagsAll?, tagsAny?, name?: 'web-*' } instead of targetIds, resolved when it executes;
 * parameters?: [{ name: 'VERSION', required?, default?, secret?, pattern?, description? }], seen by its actions
 * as OC_PARAM_<NAME> environment variables
 */
export class JobsResource extends ArchivableResource {
  static path = '/jobs';

  /**
   * Start an execution (on `targetIds`, default the job's own); resolves to it with its branches. With
   * `idempotencyKey` (1-255 printable ASCII characters) the call is safe to repeat: the same key for the same
   * request within 24 hours resolves to the execution the first call made. `targetSelector` (not with
   * `targetIds`: { tagsAll, tagsAny, name }) overrides the job's targets the same way; `parameters` gives the
   * values of the job's declared parameters ({ VERSION: '1.2' }: names as declared, string values).
   */
  execute(jobRef, { targetIds, idempotencyKey, targetSelector, parameters, maxConcurrency, maxErrors } = {}) {
    const body = {};
    if (targetIds) body.targetIds = targetIds;
    if (targetSelector) body.targetSelector = targetSelector;
    if (parameters) body.parameters = parameters;
    if (maxConcurrency !== undefined) body.maxConcurrency = maxConcurrency;
    if (maxErrors !== undefined) body.maxErrors = maxErrors;
    return this._http.json('POST', this._item(jobRef, '/execute'),
      { body, headers: idempotencyHeaders(idempotencyKey) });
  }

  /** The job's executions with their branches, newest first: { limit (1..500, default 50), offset }. */
  executions(jobRef, { limit, offset } = {}) {
    return this._http.json('GET', this._item(jobRef, '/executions'), { query: { limit, offset } });
  }

  /** Every execution of the job, newest first, fetching `pageSize` at a time. */
  async *iterExecutions(jobRef, { pageSize = 100 } = {}) {
    for (let offset = 0; ;) {
      const chunk = await this.executions(jobRef, { limit: pageSize, offset });
      yield* chunk;
      if (chunk.length < pageSize) return;
      offset += chunk.length;
    }
  }
}

export class ExecutionsResource extends Resource {
  /** An execution by serial (J20250001.0001), with its job and branches. */
  getBySerial(executionSerial) {
    return this._http.json('GET', `/executions/serial/${segment(executionSerial)}`);
  }

  /** A branch by serial (J20250001.0001.0001), with its target, output and steps. */
  getBranch(branchSerial) {
    return this._http.json('GET', `/executions/branch/${segment(branchSerial)}`);
  }

  /**
   * A branch's output from a byte offset, while it runs and after it ended (secrets masked): { stream: 'stdout'
   * (default) | 'stderr', offset (default 0) }. Resolves to { branchSerial, stream, offset, data, nextOffset,
   * running, truncated }; to follow the branch, read again from nextOffset while running is true.
   */
  getOutput(branchSerial, { stream = 'stdout', offset = 0 } = {}) {
    return this._http.json('GET', `/executions/branch/${segment(branchSerial)}/output`, { query: { stream, offset } });
  }

  /** By serial prefix, job name or target name: { type: 'execution' | 'branch' | 'all', limit }. */
  search(q, { type, limit } = {}) {
    return this._http.json('GET', '/executions/search', { query: { q, type, limit } });
  }

  /** Look up 1..1000 execution and/or branch serials at once. */
  bulk(serials) {
    return this._http.json('POST', '/executions/bulk', { body: { serials: [...serials] } });
  }

  /** Cancel: queued branches never start, running ones are killed. */
  cancel(executionSerial) {
    return this._http.json('POST', `/executions/serial/${segment(executionSerial)}/cancel`);
  }

  /**
   * Start a new execution of the job with the actions this one ran (trigger 'retry'), on the targets whose
   * branches did not complete (only: 'failed', the default) or on all of them ('all'). Rejects with Conflict
   * while it still runs, ValidationError when nothing failed. `idempotencyKey`: as for jobs.execute.
   */
  retry(executionSerial, { only = 'failed', idempotencyKey } = {}) {
    return this._http.json('POST', `/executions/serial/${segment(executionSerial)}/retry`,
      { body: { only }, headers: idempotencyHeaders(idempotencyKey) });
  }

  /**
   * Poll until the execution is finished (completed, failed or cancelled) and resolve to it; rejects with
   * WaitTimeout after `timeout` ms (default 60000; 0 or null: forever). A number is taken as the timeout.
   */
  async wait(executionSerial, options = {}) {
    const { timeout = 60000, pollInterval = 500 } = typeof options === 'number' ? { timeout: options } : options;
    const deadline = timeout ? Date.now() + timeout : null;
    for (;;) {
      const execution = await this.getBySerial(executionSerial);
      if (TERMINAL_EXECUTION_STATUSES.includes(execution.status)) return execution;
      if (deadline !== null) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          throw new WaitTimeout(`execution ${executionSerial} still '${execution.status}' after ${timeout} ms`);
        }
        await sleep(Math.min(pollInterval, remaining));
      } else {
        await sleep(pollInterval);
      }
    }
  }

  /**
   * Open the live event stream, optionally filtered: { executionSerial, jobSerial, timeout (ms per event),
   * connectTimeout, since (with executionSerial: start after that seq; 0: the whole history), includeOutput
   * (also branch_output events: not numbered, not replayed on a reconnect), reconnect (default true),
   * maxReconnectDelay (ms, default 5000) }. `await stream.ready` before starting what you want to watch.
   */
  events({
    executionSerial, jobSerial, timeout = null, connectTimeout, since = null, includeOutput = false, reconnect = true,
    maxReconnectDelay = 5000,
  } = {}) {
    const client = this._client;
    const http = this._http;
    return new EventStream({
      url: eventsURL(http.root, { executionSerial, jobSerial, since, includeOutput }),
      token: http.token,
      getToken: () => http.token, // a reconnect presents the token the client holds then
      WebSocket: client.WebSocket ?? globalThis.WebSocket,
      timeout,
      connectTimeout: connectTimeout ?? http.timeout,
      filters: { executionSerial, jobSerial },
      precheck: () => http.json('GET', '/auth/me'),
      since,
      reconnect,
      maxReconnectDelay,
    });
  }
}

export class AnalyticsResource extends Resource {
  /** { period: '24h' | '7d' | '30d' | '90d' (default 7d), groupBy: 'hour' | 'day' | 'week' | 'month' (default day) } */
  executions({ period, groupBy } = {}) {
    return this._http.json('GET', '/analytics/executions', { query: { period, groupBy } });
  }

  /** A job's metrics over { period } (default 30d), with per-target performance. */
  jobMetrics(jobSerial, { period } = {}) {
    return this._http.json('GET', `/analytics/jobs/${segment(jobSerial)}/metrics`, { query: { period } });
  }
}
