// Unit tests of portcullis-client against a fake fetch that speaks the
// gateway's contract. Run: node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient, LoginError, memoryStore } from '../index.js';

/** A refusal in the contract's shape. */
function refusal(status, code, extra = {}) {
  return new Response(JSON.stringify({ error: code, error_description: code, request_id: 'r' }), {
    status,
    headers: { 'Content-Type': 'application/json', 'X-Portcullis-Error': code, ...extra },
  });
}

function json(body, headers = {}) {
  return new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json', ...headers } });
}

/**
 * A fake gateway: tokens `at-N`, refresh tokens `rt-N`; `api` decides the
 * answer to API calls from the token sent. Records every call.
 */
function fakeGateway({ api = () => json({ ok: true }), token } = {}) {
  const calls = [];
  let generation = 0;
  const state = { refreshes: 0, current: null };
  const pair = () => {
    generation += 1;
    state.current = `at-${generation}`;
    return { access_token: state.current, token_type: 'Bearer', expires_in: 300, refresh_token: `rt-${generation}` };
  };
  const fetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    const body = init.body ? String(init.body) : '';
    const call = { url: String(url), method: init.method ?? 'GET', headers, body, credentials: init.credentials };
    calls.push(call);
    await new Promise((r) => setImmediate(r));
    const path = new URL(String(url), 'http://gw.test').pathname;
    if (path === '/auth/login') return json(pair());
    if (path === '/auth/token') {
      state.refreshes += 1;
      if (token) return token(call, pair);
      return json(pair());
    }
    if (path === '/auth/logout') return json({ logged_out: true });
    return api(call, state);
  };
  return { fetch, calls, state };
}

/** Timers the test controls; `sleep` records and resolves at once. */
function fakeTimers() {
  const timers = [];
  const slept = [];
  return {
    timers,
    slept,
    setTimeout: (fn, ms) => { const t = { fn, ms, cleared: false }; timers.push(t); if (ms === 0) setImmediate(fn); return t; },
    clearTimeout: (t) => { if (t) t.cleared = true; },
    sleep: async (ms) => { slept.push(ms); },
  };
}

function client(gateway, extra = {}) {
  const timers = extra.timers ?? fakeTimers();
  const logouts = [];
  const c = createClient({
    fetch: gateway.fetch,
    baseUrl: 'https://gw.test',
    onLogout: (e) => logouts.push(e.reason),
    random: () => 0.5,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    sleep: timers.sleep,
    ...extra,
  });
  return { c, logouts, timers };
}

const bearerOf = (call) => call.headers.get('Authorization');
const apiCalls = (gw) => gw.calls.filter((c) => !c.url.includes('/auth/'));

test('any number of concurrent token_expired refusals cause exactly one refresh, then one retry each', async () => {
  const gw = fakeGateway({
    api: (call, state) => (bearerOf(call) === `Bearer ${state.current}` && state.refreshes > 0 ? json({ ok: true }) : refusal(401, 'token_expired')),
  });
  const { c } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  const responses = await Promise.all(
    Array.from({ length: 5 }, (_, i) => c.fetch('/orders', { method: 'POST', body: `n=${i}` })),
  );
  assert.deepEqual(responses.map((r) => r.status), [200, 200, 200, 200, 200]);
  assert.equal(gw.state.refreshes, 1);
  const posts = apiCalls(gw);
  assert.equal(posts.length, 10, 'each request sent twice: refused, then retried');
  for (let i = 0; i < 5; i++) {
    assert.deepEqual(posts.filter((p) => p.body === `n=${i}`).map(bearerOf), ['Bearer at-1', 'Bearer at-2']);
  }
});

test('a Request object keeps its headers and body on the retry', async () => {
  const gw = fakeGateway({
    api: (call, state) => (state.refreshes > 0 ? json({ ok: true }) : refusal(401, 'token_expired')),
  });
  const seen = [];
  const recording = {
    fetch: async (input, init) => {
      if (input instanceof Request) seen.push({ body: await input.text(), trace: init.headers.get('X-Trace'), auth: init.headers.get('Authorization') });
      return gw.fetch(input instanceof Request ? input.url : input, init);
    },
  };
  const { c } = client(recording);
  await c.login({ username: 'alice', password: 'secret' });
  const request = new Request('https://gw.test/orders', { method: 'POST', body: 'item=1', headers: { 'X-Trace': 't' } });
  assert.equal((await c.fetch(request)).status, 200);
  assert.deepEqual(seen, [
    { body: 'item=1', trace: 't', auth: 'Bearer at-1' },
    { body: 'item=1', trace: 't', auth: 'Bearer at-2' },
  ]);
});

test('bearer mode keeps the refresh token where the app says and rotates it', async () => {
  const gw = fakeGateway();
  const store = memoryStore();
  const { c } = client(gw, { refreshTokenStore: store, crossTab: false });
  await c.login({ username: 'alice', password: 'secret' }, { deviceName: 'laptop' });
  assert.equal(gw.calls[0].body, 'username=alice&password=secret&device_name=laptop');
  assert.equal(store.get(), 'rt-1');
  assert.equal(await c.refresh(), true);
  assert.equal(gw.calls[1].body, 'grant_type=refresh_token&refresh_token=rt-1');
  assert.equal(store.get(), 'rt-2');
  assert.equal(gw.calls[1].headers.get('X-Portcullis-CSRF'), null);
});

test('cookie mode sends the cookie and the CSRF header, never a refresh token', async () => {
  const gw = fakeGateway();
  const { c } = client(gw, { mode: 'cookie', crossTab: false });
  await c.login({ username: 'alice', password: 'secret' });
  await c.refresh();
  for (const call of gw.calls) {
    assert.equal(call.credentials, 'include');
    assert.equal(call.headers.get('X-Portcullis-CSRF'), '1');
  }
  assert.equal(gw.calls[1].body, 'grant_type=refresh_token');
});

test('cookie mode restores the session from the cookie on the first call', async () => {
  const gw = fakeGateway();
  const { c } = client(gw, { mode: 'cookie', crossTab: false });
  const response = await c.fetch('/orders');
  assert.equal(response.status, 200);
  assert.deepEqual(gw.calls.map((x) => new URL(x.url).pathname), ['/auth/token', '/orders']);
  assert.equal(bearerOf(gw.calls[1]), 'Bearer at-1');
});

test('refresh ahead at a jittered moment inside the window from X-Token-Expires-In', async () => {
  const gw = fakeGateway({ api: () => json({ ok: true }, { 'X-Token-Expires-In': '40' }) });
  const { c, timers } = client(gw, { random: () => 0.25 });
  await c.login({ username: 'alice', password: 'secret' });
  await c.fetch('/orders');
  await c.fetch('/orders');
  const ahead = timers.timers.filter((t) => t.ms > 0);
  assert.equal(ahead.length, 1, 'one timer however many responses carry the hint');
  assert.equal(ahead[0].ms, Math.floor(40_000 * (0.1 + 0.7 * 0.25)));
  ahead[0].fn();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(gw.state.refreshes, 1);
  assert.equal(bearerOf((await c.fetch('/orders'), gw.calls.at(-1))), 'Bearer at-2');
});

test('token_revoked: one refresh; when it fails with invalid_grant, onLogout once and no retry loop', async () => {
  const gw = fakeGateway({
    api: () => refusal(401, 'token_revoked'),
    token: () => refusal(400, 'invalid_grant'),
  });
  const { c, logouts } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  const response = await c.fetch('/orders');
  assert.equal(response.status, 401);
  assert.equal(response.headers.get('X-Portcullis-Error'), 'token_revoked');
  assert.equal(gw.state.refreshes, 1);
  assert.equal(apiCalls(gw).length, 1);
  assert.deepEqual(logouts, ['invalid_grant']);
  assert.equal(c.loggedIn, false);
});

test('a revoked refusal arriving after the session ended: no second refresh, no second onLogout', async () => {
  let release;
  const slow = new Promise((r) => { release = r; });
  const gw = fakeGateway({
    api: async (call) => { if (call.url.endsWith('/slow')) await slow; return refusal(401, 'token_revoked'); },
    token: () => refusal(400, 'invalid_grant'),
  });
  const { c, logouts } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  const late = c.fetch('/orders/slow');
  const first = await c.fetch('/orders');
  assert.equal(first.status, 401);
  release();
  assert.equal((await late).status, 401);
  assert.equal(gw.state.refreshes, 1);
  assert.deepEqual(logouts, ['invalid_grant']);
});

test('account_disabled goes straight back to login without a refresh', async () => {
  const gw = fakeGateway({ api: () => refusal(403, 'account_disabled') });
  const { c, logouts } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  assert.equal((await c.fetch('/orders')).status, 403);
  assert.equal(gw.state.refreshes, 0);
  assert.deepEqual(logouts, ['account_disabled']);
});

test('after logout a call sends no token and token_missing calls onLogout', async () => {
  const gw = fakeGateway({ api: (call) => (bearerOf(call) ? json({ ok: true }) : refusal(401, 'token_missing')) });
  const { c, logouts } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  await c.logout();
  assert.equal(bearerOf(gw.calls.find((x) => x.url.endsWith('/auth/logout'))), 'Bearer at-1');
  const response = await c.fetch('/orders');
  assert.equal(response.status, 401);
  assert.equal(bearerOf(gw.calls.at(-1)), null);
  assert.deepEqual(logouts, ['logout', 'token_missing']);
  assert.equal(gw.state.refreshes, 0);
});

test('auth_unavailable and 429 are retried with bounded backoff honouring Retry-After', async () => {
  let n = 0;
  const gw = fakeGateway({
    api: () => {
      n += 1;
      if (n === 1) return refusal(503, 'auth_unavailable', { 'Retry-After': '2' });
      if (n === 2) return refusal(429, 'too_many_requests', { 'Retry-After': '1' });
      return json({ ok: true });
    },
  });
  const { c, timers } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  assert.equal((await c.fetch('/orders')).status, 200);
  assert.deepEqual(timers.slept, [2000, 1000]);

  const down = fakeGateway({ api: () => refusal(503, 'auth_unavailable', { 'Retry-After': '600' }) });
  const bounded = client(down, { maxRetries: 3, maxBackoffMs: 5000 });
  await bounded.c.login({ username: 'alice', password: 'secret' });
  const response = await bounded.c.fetch('/orders');
  assert.equal(response.status, 503);
  assert.equal(apiCalls(down).length, 4, 'first try and three retries');
  assert.deepEqual(bounded.timers.slept, [5000, 5000, 5000]);
  assert.deepEqual(bounded.logouts, [], 'an unavailable gateway does not end the session');
});

test('auth_unavailable is retried only for a method safe to repeat; a limited POST is', async () => {
  // A 503 may follow an upstream that acted (a session-control write the
  // store did not acknowledge): a password change must not be sent twice.
  const gw = fakeGateway({ api: () => refusal(503, 'auth_unavailable', { 'Retry-After': '1' }) });
  const { c, timers } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  assert.equal((await c.fetch('/account/password', { method: 'POST', body: 'x' })).status, 503);
  assert.equal(apiCalls(gw).length, 1, 'the POST went once');
  assert.deepEqual(timers.slept, []);
  assert.equal((await c.fetch('/orders', { method: 'delete' })).status, 503);
  assert.equal(apiCalls(gw).length, 5, 'a DELETE is retried: first try and three retries');

  let n = 0;
  const limited = fakeGateway({
    api: () => (++n === 1 ? refusal(429, 'rate_limited', { 'Retry-After': '1' }) : json({ ok: true })),
  });
  const second = client(limited);
  await second.c.login({ username: 'alice', password: 'secret' });
  assert.equal((await second.c.fetch('/orders', { method: 'POST', body: 'x' })).status, 200);
  assert.equal(apiCalls(limited).length, 2, 'a limited request never reached the upstream');
});

test("an upstream's own 401 or 429 is the app's business: no refresh, no retry", async () => {
  const gw = fakeGateway({ api: () => new Response('no', { status: 429 }) });
  const { c } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  assert.equal((await c.fetch('/orders')).status, 429);
  assert.equal(apiCalls(gw).length, 1);
  assert.equal(gw.state.refreshes, 0);
});

test('a refused login throws the backend answer', async () => {
  const gw = { fetch: async () => new Response('wrong password', { status: 401 }) };
  const { c } = client(gw);
  await assert.rejects(c.login({ username: 'alice', password: 'nope' }), (e) => e instanceof LoginError && e.status === 401 && e.body === 'wrong password');
  assert.equal(c.loggedIn, false);
});

test('sessions() lists devices and revokeSession(sid) ends one; the current one logs out', async () => {
  const list = { sessions: [{ sid: 's1', device: 'laptop', current: true }, { sid: 's2', device: 'phone', current: false }] };
  const gw = fakeGateway({ api: (call) => (call.method === 'DELETE' ? json({ ended: 'x' }) : json(list)) });
  const { c, logouts } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  assert.deepEqual((await c.sessions()).map((s) => s.sid), ['s1', 's2']);
  await c.revokeSession('s2');
  assert.ok(gw.calls.some((x) => x.method === 'DELETE' && x.url === 'https://gw.test/auth/sessions/s2'));
  assert.deepEqual(logouts, []);
  await c.revokeSession('s1');
  assert.deepEqual(logouts, ['logout']);
});

/** Web Locks and BroadcastChannel fakes shared by two "tabs". */
function fakeTabs() {
  let held = Promise.resolve();
  let busy = false;
  const locks = {
    request: (_name, options, fn) => {
      if (typeof options === 'function') fn = options;
      else if (options.ifAvailable && busy) return Promise.resolve().then(() => fn(null));
      const run = held.then(async () => {
        busy = true;
        try { return await fn({ name: _name }); } finally { busy = false; }
      });
      held = run.catch(() => {});
      return run;
    },
  };
  const channels = [];
  class Channel {
    constructor() { channels.push(this); this.onmessage = null; }
    postMessage(data) {
      for (const other of channels) if (other !== this) setImmediate(() => other.onmessage?.({ data }));
    }
    close() {}
  }
  return { locks, BroadcastChannel: Channel };
}

test('two tabs expiring together: one refresh across tabs, the other tab gets the token', async () => {
  const gw = fakeGateway({
    api: (call, state) => (bearerOf(call) === `Bearer ${state.current}` && state.refreshes > 0 ? json({ ok: true }) : refusal(401, 'token_expired')),
  });
  const tabs = fakeTabs();
  const a = client(gw, { mode: 'cookie', ...tabs });
  const b = client(gw, { mode: 'cookie', ...tabs });
  await a.c.login({ username: 'alice', password: 'secret' });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(b.c.loggedIn, true, 'the login reached the other tab');
  const [ra, rb] = await Promise.all([a.c.fetch('/orders'), b.c.fetch('/orders')]);
  assert.deepEqual([ra.status, rb.status], [200, 200]);
  assert.equal(gw.state.refreshes, 1);

  await a.c.logout();
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(b.logouts, ['logout'], 'logout reaches every tab');
});

test('rate_limited (429 from a route limit) waits Retry-After, then retries, without a refresh', async () => {
  let n = 0;
  const gw = fakeGateway({
    api: () => {
      n += 1;
      if (n === 1) {
        return refusal(429, 'rate_limited', {
          'Retry-After': '3',
          'RateLimit-Policy': '"api";q=100;w=60',
          'RateLimit': '"api";r=0;t=3',
        });
      }
      return json({ ok: true });
    },
  });
  const { c, timers, logouts } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  assert.equal((await c.fetch('/orders')).status, 200);
  assert.deepEqual(timers.slept, [3000], 'waited what Retry-After said');
  assert.equal(apiCalls(gw).length, 2);
  assert.equal(gw.state.refreshes, 0, 'a rate limit is not a token problem');
  assert.deepEqual(logouts, []);
});
