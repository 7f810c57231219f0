// portcullis-client: the client half of the portcullis contract.
//
// Wraps fetch: adds the access token, refreshes it once for any number of
// concurrent requests that get `401 token_expired` and retries each of them
// once (a gateway refusal means the upstream never saw the request, so the
// retry is safe even for POST), refreshes ahead when a response carries
// `X-Token-Expires-In`, coordinates tabs (Web Locks + BroadcastChannel when
// the platform has them), backs off on `auth_unavailable` / 429 honouring
// `Retry-After`, and drops to the app's login screen (`onLogout`) when the
// session is over. A route that wants a more recent login (RFC 9470
// step-up, `401 reauthentication_required`) asks the app once through
// `onReauthenticationRequired` and retries the request after it logged in
// again. No runtime dependencies.

const ERROR_HEADER = 'X-Portcullis-Error';
const EXPIRES_IN_HEADER = 'X-Token-Expires-In';
const LOCK_NAME = 'portcullis-refresh';
/** How long a tab keeps the lock after a refresh (ms). */
const HOLD_MS = 300;

/** RFC 9470 step-up: the route wants a more recent login. */
const REAUTH_CODE = 'reauthentication_required';

/** Codes after which the session is over: back to the login screen. */
const SESSION_OVER = new Set(['account_disabled', 'invalid_grant', 'token_invalid']);

/** A refresh-token store that keeps the token in this page's memory only. */
export function memoryStore() {
  let value = null;
  return {
    get: () => value,
    set: (token) => { value = token; },
    remove: () => { value = null; },
  };
}

/** A refresh-token store in `storage` (e.g. localStorage), shared by tabs. */
export function storageStore(storage, key = 'portcullis.refresh_token') {
  return {
    get: () => storage.getItem(key),
    set: (token) => storage.setItem(key, token),
    remove: () => storage.removeItem(key),
  };
}

/** Thrown by `login` when the backend refuses the credentials. */

/** RFC 9110 §9.2.2: the methods a client may send again without harm. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

function isIdempotent(input, init) {
  const method = init?.method ?? (typeof input === 'object' && input !== null ? input.method : undefined) ?? 'GET';
  return IDEMPOTENT.has(String(method).toUpperCase());
}

export class LoginError extends Error {
  constructor(response, body) {
    super(`login refused: ${response.status}`);
    this.name = 'LoginError';
    this.status = response.status;
    this.code = response.headers.get(ERROR_HEADER);
    this.body = body;
  }
}

/** Thrown when the gateway stays unavailable after the bounded retries. */
export class UnavailableError extends Error {
  constructor(response) {
    super(`gateway unavailable: ${response ? response.status : 'network error'}`);
    this.name = 'UnavailableError';
    this.response = response;
  }
}

/** RFC 9470 §3: the `max_age` (seconds) of a step-up challenge, or null. */
function maxAgeOf(challenge) {
  const found = /(?:^|[\s,])max_age\s*=\s*"?(\d+)"?/i.exec(challenge ?? '');
  return found ? Number(found[1]) : null;
}

const isRequest = (input) => typeof Request !== 'undefined' && input instanceof Request;

export function createClient(options = {}) {
  return new PortcullisClient(options);
}

export class PortcullisClient {
  #base; #mode; #fetch; #onLogout; #onToken; #store; #csrfHeader;
  #maxRetries; #maxBackoffMs; #random; #now; #setTimeout; #clearTimeout; #sleep;
  #locks; #channel; #onReauth;
  #access = null;
  #expiresAt = 0;
  /** 'unknown' (may hold a cookie), 'in' or 'out'. */
  #session;
  #refreshing = null;
  #aheadTimer = null;
  /** Refreshes waiting for another tab's answer. */
  #waiters = [];
  /** Logins so far; a step-up refusal of a request sent before one is retried without asking. */
  #logins = 0;
  /** The app's step-up prompt while it is open (one for all refused requests). */
  #reauthenticating = null;

  constructor(options) {
    this.#base = (options.baseUrl ?? '').replace(/\/+$/, '');
    this.#mode = options.mode ?? 'bearer';
    if (!['bearer', 'cookie'].includes(this.#mode)) throw new TypeError('mode is "bearer" or "cookie"');
    this.#fetch = options.fetch ?? ((...args) => globalThis.fetch(...args));
    this.#onLogout = options.onLogout ?? (() => {});
    this.#onToken = options.onToken ?? (() => {});
    this.#onReauth = options.onReauthenticationRequired ?? null;
    this.#store = options.refreshTokenStore ?? memoryStore();
    this.#csrfHeader = options.csrfHeader ?? 'X-Portcullis-CSRF';
    this.#maxRetries = options.maxRetries ?? 3;
    this.#maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
    this.#setTimeout = options.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this.#clearTimeout = options.clearTimeout ?? ((t) => globalThis.clearTimeout(t));
    this.#sleep = options.sleep ?? ((ms) => new Promise((r) => this.#setTimeout(r, ms)));
    const shared = this.#mode === 'cookie' || options.refreshTokenStore !== undefined;
    const crossTab = options.crossTab ?? shared;
    this.#locks = crossTab ? (options.locks ?? globalThis.navigator?.locks ?? null) : null;
    const Channel = options.BroadcastChannel ?? globalThis.BroadcastChannel;
    this.#channel = crossTab && Channel ? new Channel(options.channelName ?? 'portcullis-client') : null;
    if (this.#channel) this.#channel.onmessage = (event) => this.#fromTab(event.data);
    this.#session = this.#mode === 'cookie' || this.#store.get() ? 'unknown' : 'out';
  }

  /** Whether the client holds a session it believes is alive. */
  get loggedIn() { return this.#access !== null; }

  /** When the access token expires (ms since the epoch), 0 without one. */
  get expiresAt() { return this.#access ? this.#expiresAt : 0; }

  /** `fetch` with the access token, refresh, retries and logout handling. */
  async fetch(input, init = {}) {
    let refreshed = false;
    let steppedUp = false;
    for (let unavailable = 0; ; ) {
      if (this.#access === null && this.#session !== 'out') {
        await this.#quietRefresh();
      }
      const sent = this.#access;
      const logins = this.#logins;
      const response = await this.#fetch(this.#target(input), this.#withToken(input, init, sent));
      const code = response.headers.get(ERROR_HEADER);
      if (!code) {
        // `X-Token-Expires-In: 0`: the token is already spent (the backend
        // ended the user's other sessions, so every older token died):
        // refresh now, once for every response that says so, before this
        // one is handed back.
        if (response.headers.get(EXPIRES_IN_HEADER) === '0' && sent !== null) await this.#quietRefresh(sent);
        else this.#scheduleAhead(response, sent);
        return response;
      }
      if (code === 'token_expired' || code === 'token_revoked' || (code === 'token_missing' && sent === null && this.#session !== 'out')) {
        // Contract: refresh and retry once. A refresh that fails because
        // the session is over has already logged out; one that fails
        // because the gateway is unavailable leaves the session as it is.
        if (!refreshed) {
          if (!(await this.#quietRefresh(sent))) return response;
          refreshed = true;
          continue;
        }
        this.#logout(code);
        return response;
      }
      if (code === REAUTH_CODE) {
        // The session is fine; the route wants a newer login. Retry once,
        // after the app logged in again (a refusal means the upstream never
        // saw the request, so the retry is safe).
        if (steppedUp || !(await this.#reauthenticate(response, logins))) return response;
        steppedUp = true;
        continue;
      }
      if (code === 'token_missing') {
        this.#logout(code);
        return response;
      }
      if (SESSION_OVER.has(code)) {
        this.#logout(code);
        return response;
      }
      // 429: the upstream never saw the request. `auth_unavailable` may
      // follow an upstream that did act (a session-control write the store
      // did not acknowledge), so only a method safe to repeat is retried.
      const retryable = response.status === 429 || (code === 'auth_unavailable' && isIdempotent(input, init));
      if (retryable && unavailable < this.#maxRetries) {
        await this.#sleep(this.#backoff(response, unavailable++));
        continue;
      }
      return response;
    }
  }

  /**
   * Logs in through the gateway (`POST /auth/login`): `credentials` are sent
   * as a form, as the backend's own login expects. Throws `LoginError` with
   * the backend's answer when it refuses.
   */
  async login(credentials, { deviceName } = {}) {
    const pairs = typeof credentials?.[Symbol.iterator] === 'function' ? [...credentials] : Object.entries(credentials);
    const body = new URLSearchParams(pairs);
    if (deviceName) body.set('device_name', deviceName);
    // Step-up: the session's refresh token goes along, so the gateway keeps
    // this session (same device entry) and renews its login time. Cookie
    // mode sends the refresh cookie anyway.
    const current = this.#mode === 'bearer' ? await this.#store.get() : null;
    if (current && !body.has('refresh_token')) body.set('refresh_token', current);
    const response = await this.#auth('/auth/login', { method: 'POST', body });
    const text = await response.text();
    if (!response.ok) throw new LoginError(response, text);
    this.#accept(JSON.parse(text), 'login');
    return { expiresAt: this.#expiresAt };
  }

  /** Ends this device's session; every tab of it drops to the login screen. */
  async logout() {
    const token = this.#access;
    try {
      if (token) await this.#auth('/auth/logout', { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
    } finally {
      this.#logout('logout');
    }
  }

  /** The user's devices: `[{sid, device, created, last_used, expires_at, current}]`. */
  async sessions() {
    const response = await this.fetch(`${this.#base}/auth/sessions`, { credentials: this.#credentials() });
    if (!response.ok) throw new Error(`listing sessions failed: ${response.status}`);
    return (await response.json()).sessions;
  }

  /** Signs out one device; revoking the current one logs this client out. */
  async revokeSession(sid) {
    const current = (await this.sessions()).find((s) => s.current)?.sid;
    const response = await this.fetch(`${this.#base}/auth/sessions/${encodeURIComponent(sid)}`, { method: 'DELETE', credentials: this.#credentials() });
    if (!response.ok) throw new Error(`revoking the session failed: ${response.status}`);
    if (sid === current) this.#logout('logout');
  }

  /**
   * Refreshes now (single flight: concurrent callers share one refresh;
   * across tabs one tab refreshes and the others receive its token).
   * Resolves to whether a fresh access token is held.
   */
  refresh() {
    return this.#quietRefresh(this.#access);
  }

  /** Restores a session on page load (cookie, or a stored refresh token). */
  async restore() {
    if (this.#access) return true;
    return this.#session !== 'out' && this.#quietRefresh(null);
  }

  /** Stops timers and the tab channel (tests, page teardown). */
  close() {
    if (this.#aheadTimer) this.#clearTimeout(this.#aheadTimer);
    this.#aheadTimer = null;
    this.#channel?.close?.();
  }

  // ---- step-up ---------------------------------------------------------

  /**
   * Asks the app to log in again (`onReauthenticationRequired`), once for
   * any number of requests refused meanwhile. Resolves to whether the
   * refused request should be retried: the app's callback resolved (and not
   * to `false`), or a login already happened since that request was sent.
   * An error thrown by the callback rejects the request's `fetch`.
   */
  async #reauthenticate(response, logins) {
    if (this.#logins !== logins) return true;
    if (!this.#onReauth) return false;
    if (!this.#reauthenticating) {
      const maxAge = maxAgeOf(response.headers.get('WWW-Authenticate'));
      this.#reauthenticating = (async () => this.#onReauth({ maxAge }))()
        .finally(() => { this.#reauthenticating = null; });
    }
    return (await this.#reauthenticating) !== false;
  }

  // ---- refresh ---------------------------------------------------------

  #quietRefresh(stale = this.#access) {
    // A request sent with an older token whose refusal arrives after the
    // refresh: the new token is already here. Or the session ended
    // meanwhile: nothing to refresh, and no second onLogout.
    if (this.#access !== null && this.#access !== stale) return Promise.resolve(true);
    if (this.#session === 'out') return Promise.resolve(false);
    if (!this.#refreshing) {
      this.#refreshing = this.#refreshAcrossTabs(stale)
        .catch(() => this.#access !== null && this.#access !== stale)
        .finally(() => { this.#refreshing = null; });
    }
    return this.#refreshing;
  }

  async #refreshAcrossTabs(stale) {
    if (!this.#locks) return this.#rotate();
    const waited = Symbol('waited');
    const mine = await new Promise((resolve, reject) => {
      this.#locks.request(LOCK_NAME, { ifAvailable: true }, async (lock) => {
        if (!lock) return resolve(waited);
        try {
          resolve(await this.#rotate());
        } catch (e) {
          return reject(e);
        }
        // Keep the lock a moment after posting the token: a tab whose
        // refusal arrives late finds it taken and waits for the message
        // instead of rotating a second time.
        await this.#sleep(HOLD_MS);
      }).catch(reject);
    });
    if (mine !== waited) return mine;
    // Another tab holds the lock: it posts its token before letting go,
    // so wait for that message (bounded) rather than rotate again.
    return this.#locks.request(LOCK_NAME, async () => {
      await this.#tokenFromTab(stale, 1000);
      if (this.#session === 'out') return false;
      if (this.#access !== null && this.#access !== stale) return true;
      return this.#rotate();
    });
  }

  /** Resolves when another tab's token or logout arrives, or after `ms`. */
  #tokenFromTab(stale, ms) {
    if (this.#session === 'out' || (this.#access !== null && this.#access !== stale)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = this.#setTimeout(resolve, ms);
      this.#waiters.push(() => { this.#clearTimeout(timer); resolve(); });
    });
  }

  /** One refresh grant against the gateway. */
  async #rotate() {
    const body = new URLSearchParams({ grant_type: 'refresh_token' });
    if (this.#mode === 'bearer') {
      const token = await this.#store.get();
      if (!token) {
        this.#logout('token_missing');
        return false;
      }
      body.set('refresh_token', token);
    }
    for (let attempt = 0; ; attempt++) {
      const response = await this.#auth('/auth/token', { method: 'POST', body });
      if (response.ok) {
        this.#accept(await response.json(), 'refresh');
        return true;
      }
      const code = response.headers.get(ERROR_HEADER);
      const transient = response.status === 429 || response.status >= 500 || code === 'auth_unavailable';
      if (!transient) {
        // invalid_grant, a missing cookie, a refused origin: the session is over.
        this.#logout(code === 'invalid_request' ? 'token_missing' : (code ?? 'invalid_grant'));
        return false;
      }
      if (attempt >= this.#maxRetries) throw new UnavailableError(response);
      await this.#sleep(this.#backoff(response, attempt));
    }
  }

  /** Takes a token answer from the gateway or another tab. */
  #accept(answer, source, broadcast = true) {
    this.#access = answer.access_token;
    this.#expiresAt = answer.expires_at ?? this.#now() + answer.expires_in * 1000;
    this.#session = 'in';
    if (source === 'login') this.#logins += 1;
    if (answer.refresh_token && this.#mode === 'bearer') this.#store.set(answer.refresh_token);
    if (this.#aheadTimer) this.#clearTimeout(this.#aheadTimer);
    this.#aheadTimer = null;
    if (broadcast) {
      this.#channel?.postMessage({ type: 'token', access_token: this.#access, expires_at: this.#expiresAt });
    }
    this.#onToken({ expiresAt: this.#expiresAt, source });
  }

  /** Refresh ahead: at a random moment inside the window the gateway gave. */
  #scheduleAhead(response, sent) {
    const header = response.headers.get(EXPIRES_IN_HEADER);
    if (header === null || sent === null || sent !== this.#access || this.#aheadTimer) return;
    const seconds = Number(header);
    if (!Number.isFinite(seconds) || seconds < 0) return;
    // Between 10% and 80% of what is left, so a fleet spreads out and the
    // refresh still lands before expiry.
    const delay = Math.floor(seconds * 1000 * (0.1 + 0.7 * this.#random()));
    this.#aheadTimer = this.#setTimeout(() => {
      this.#aheadTimer = null;
      if (this.#access === sent) this.#quietRefresh(sent);
    }, delay);
  }

  #backoff(response, attempt) {
    const retryAfter = Number(response?.headers.get('Retry-After'));
    const base = Number.isFinite(retryAfter) && retryAfter > 0
      ? retryAfter * 1000
      : 500 * 2 ** attempt * (0.5 + this.#random());
    return Math.min(base, this.#maxBackoffMs);
  }

  // ---- logout and tabs -------------------------------------------------

  #logout(reason, broadcast = true) {
    const wasIn = this.#session !== 'out' || this.#access !== null;
    this.#access = null;
    this.#expiresAt = 0;
    this.#session = 'out';
    if (this.#mode === 'bearer') this.#store.remove();
    if (this.#aheadTimer) this.#clearTimeout(this.#aheadTimer);
    this.#aheadTimer = null;
    if (broadcast && wasIn) this.#channel?.postMessage({ type: 'logout', reason });
    this.#onLogout({ reason });
  }

  #fromTab(message) {
    if (message?.type === 'token' && message.access_token !== this.#access) {
      this.#accept(message, 'tab', false);
    } else if (message?.type === 'logout' && this.#session !== 'out') {
      this.#logout(message.reason, false);
    }
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  // ---- requests --------------------------------------------------------

  /** The URL, or a fresh copy of a `Request` (its body is read once per attempt). */
  #target(input) {
    if (isRequest(input)) return input.clone();
    if (typeof input === 'string' && input.startsWith('/') && this.#base) return this.#base + input;
    return input;
  }

  #withToken(input, init, token) {
    const headers = new Headers(init.headers ?? (isRequest(input) ? input.headers : undefined));
    if (token) headers.set('Authorization', `Bearer ${token}`);
    return { ...init, headers };
  }

  #credentials() {
    return this.#mode === 'cookie' ? 'include' : 'same-origin';
  }

  /** A call to the gateway's own endpoints: the cookie and the CSRF header in cookie mode. */
  #auth(path, init) {
    const headers = new Headers(init.headers);
    if (this.#mode === 'cookie') headers.set(this.#csrfHeader, '1');
    return this.#fetch(this.#base + path, { ...init, headers, credentials: this.#credentials() });
  }
}
