import { HttpTransport } from './http.js';
import {
  AnalyticsResource, AuthResource, CredentialsResource, ExecutionsResource, JobsResource, TargetsResource, UsersResource,
} from './resources.js';

/**
 * A client of the OpsConductor API.
 *
 *   new EnableDRMClient({ baseURL: 'http://localhost:8000', token, maxRetries: 3, timeout: 30000, WebSocket })
 *
 * baseURL: the server (a trailing /api is accepted). token: a JWT access token, or call auth.login().
 * maxRetries: how many times a 429 is retried after its Retry-After delay before RateLimited is thrown.
 * timeout: ms per HTTP request. WebSocket: a WebSocket class for events() where globalThis has none.
 * fetch: a fetch implementation (default globalThis.fetch). headers: extra headers for every request.
 */
export class EnableDRMClient {
  constructor({ baseURL, token = null, maxRetries = 3, timeout = 30000, WebSocket = null, fetch = null, headers = {} } = {}) {
    this._http = new HttpTransport({ baseURL, token, maxRetries, timeout, fetch, headers });
    this.WebSocket = WebSocket;
    this.auth = new AuthResource(this._http, this);
    this.jobs = new JobsResource(this._http, this);
    this.executions = new ExecutionsResource(this._http, this);
    this.targets = new TargetsResource(this._http, this);
    this.credentials = new CredentialsResource(this._http, this);
    this.users = new UsersResource(this._http, this);
    this.analytics = new AnalyticsResource(this._http, this);
  }

  /** The server root (without /api). */
  get baseURL() {
    return this._http.root;
  }

  get token() {
    return this._http.token;
  }

  set token(value) {
    this._http.token = value ?? null;
  }

  get refreshToken() {
    return this._http.refreshToken;
  }

  get maxRetries() {
    return this._http.maxRetries;
  }

  set maxRetries(value) {
    if (!Number.isInteger(value) || value < 0) throw new TypeError('maxRetries must be an integer >= 0');
    this._http.maxRetries = value;
  }

  /** Call any API route (path relative to /api), with the same auth, case conversion, errors and 429 retries. */
  request(method, path, { query, body } = {}) {
    return this._http.json(method, path, { query, body });
  }
}
