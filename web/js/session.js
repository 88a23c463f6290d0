// Who is signed in: the tokens live in sessionStorage (this tab only, gone when it closes), never in a URL.
// The access token is refreshed before it expires; any 401 on an authenticated request signs out.
import { EnableDRMClient } from '/sdk/index.js';

const KEY = 'opsconductor.monitor.session';
const MIN_MARGIN = 30_000; // ms before expiry at the latest
const RETRY_REFRESH = 10_000; // ms between refresh attempts the server did not answer

export const WRITER_ROLES = new Set(['admin', 'operator']);

export class Session extends EventTarget {
  constructor({ storage = globalThis.sessionStorage, origin = globalThis.location.origin } = {}) {
    super();
    this.storage = storage;
    this.state = null; // { accessToken, refreshToken, expiresAt, lifetime, user }
    this.endedBecause = null;
    this._timer = null;
    const fetchWith401 = (url, init = {}) => globalThis.fetch(url, init).then((response) => {
      // an authenticated request refused: the token was revoked, or it expired while the tab slept
      if (response.status === 401 && init.headers?.Authorization && this.state) {
        queueMicrotask(() => this.signOut('Your session has ended (the server refused the token). Sign in again.'));
      }
      return response;
    });
    this.client = new EnableDRMClient({ baseURL: origin, maxRetries: 2, fetch: fetchWith401 });
  }

  get signedIn() {
    return this.state !== null;
  }

  get user() {
    return this.state?.user ?? null;
  }

  /** Operators and admins see the controls that change something; viewers do not. */
  get canWrite() {
    return WRITER_ROLES.has(this.user?.role);
  }

  /** Pick up the session this tab had (a reload), refreshing it first when it is about to expire. */
  async restore() {
    let saved = null;
    try {
      saved = JSON.parse(this.storage.getItem(KEY) ?? 'null');
    } catch {
      saved = null;
    }
    if (!saved?.accessToken || !saved?.refreshToken) return false;
    this.state = saved;
    this.client.token = saved.accessToken;
    if (this._due() <= 0) {
      try {
        await this.refresh();
      } catch {
        if (this.state && Date.now() >= this.state.expiresAt) this.signOut('Your session has expired. Sign in again.');
        return this.signedIn;
      }
    } else {
      this._schedule();
    }
    return this.signedIn;
  }

  async signIn(username, password) {
    const token = await this.client.auth.login(username, password);
    const user = await this.client.auth.me();
    this._save(token, user);
    this.endedBecause = null;
    this.dispatchEvent(new Event('change'));
    return user;
  }

  /** A new access token from the refresh token; open event streams reconnect with it ('token' event). */
  async refresh() {
    const token = await this.client.auth.refresh(this.state.refreshToken);
    if (!this.state) return;
    this._save({ ...token, refreshToken: this.state.refreshToken }, this.state.user);
    this.dispatchEvent(new Event('token'));
  }

  signOut(reason = null) {
    if (!this.state && !reason) return;
    clearTimeout(this._timer);
    this._timer = null;
    this.state = null;
    this.endedBecause = reason;
    this.storage.removeItem(KEY);
    this.client.auth.logout();
    this.dispatchEvent(new Event('change'));
  }

  _save(token, user) {
    const lifetime = Math.max(1, Number(token.expiresIn ?? 3600)) * 1000;
    this.state = {
      accessToken: token.accessToken,
      refreshToken: token.refreshToken ?? this.state?.refreshToken,
      expiresAt: Date.now() + lifetime,
      lifetime,
      user,
    };
    this.client.token = this.state.accessToken;
    this.storage.setItem(KEY, JSON.stringify(this.state));
    this._schedule();
  }

  /** ms until the refresh is due: at 80 % of the token's lifetime, and at least 30 s before it expires. */
  _due() {
    const { expiresAt, lifetime } = this.state;
    return expiresAt - Math.max(MIN_MARGIN, lifetime * 0.2) - Date.now();
  }

  _schedule(delay = null) {
    clearTimeout(this._timer);
    if (!this.state) return;
    this._timer = setTimeout(async () => {
      try {
        await this.refresh();
      } catch (error) {
        // a 401 signs out through the fetch hook; anything else (server away) is tried again until expiry
        if (this.state && Date.now() < this.state.expiresAt) this._schedule(RETRY_REFRESH);
        else if (this.state) this.signOut('Your session has expired. Sign in again.');
        console.warn('token refresh failed', error);
      }
    }, Math.max(0, delay ?? this._due()));
  }

  /** Timers sleep in a hidden tab: check the deadline again when it comes back. */
  wake() {
    if (this.state && this._due() <= 0) this._schedule(0);
  }
}
