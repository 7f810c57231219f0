// Unit tests of portcullis-client's step-up handling (RFC 9470: a route
// that wants a more recent login answers `401 reauthentication_required`)
// against a fake fetch that speaks the gateway's contract. Run: node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient, LoginError, memoryStore } from '../index.js';

const CHALLENGE = 'Bearer realm="portcullis", error="insufficient_user_authentication", error_description="a more recent login is required", max_age=600';

function json(body) {
  return new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json' } });
}

/** The gateway's step-up refusal, in the contract's shape. */
function stepUp(challenge = CHALLENGE) {
  const headers = { 'Content-Type': 'application/json', 'X-Portcullis-Error': 'reauthentication_required' };
  if (challenge) headers['WWW-Authenticate'] = challenge;
  const body = { error: 'reauthentication_required', error_description: 'a more recent login is required', request_id: 'r' };
  return new Response(JSON.stringify(body), { status: 401, headers });
}

/**
 * A fake gateway whose `/account` wants a login newer than the first one:
 * tokens `at-N` from the login numbered `login` (1, 2, …). `accept` decides
 * whether a token passes; it gets the login number the token came from.
 */
function fakeGateway({ accept = (login) => login >= 2 } = {}) {
  const calls = [];
  const loginOf = new Map();
  const state = { logins: 0, tokens: 0 };
  const fetch = async (url, init = {}) => {
    const headers = new Headers(init.headers);
    const call = { path: new URL(String(url)).pathname, method: init.method ?? 'GET', headers, body: init.body ? String(init.body) : '' };
    calls.push(call);
    await new Promise((r) => setImmediate(r));
    if (call.path === '/auth/login') {
      state.logins += 1;
      state.tokens += 1;
      loginOf.set(`at-${state.tokens}`, state.logins);
      return json({ access_token: `at-${state.tokens}`, token_type: 'Bearer', expires_in: 300, refresh_token: `rt-${state.tokens}` });
    }
    const token = (headers.get('Authorization') ?? '').replace('Bearer ', '');
    return accept(loginOf.get(token) ?? 0, call) ? json({ ok: true }) : stepUp();
  };
  return { fetch, calls, state };
}

const api = (gw) => gw.calls.filter((c) => !c.path.startsWith('/auth/'));
const logins = (gw) => gw.calls.filter((c) => c.path === '/auth/login');

function client(gw, extra = {}) {
  const logouts = [];
  const c = createClient({
    fetch: gw.fetch,
    baseUrl: 'https://gw.test',
    crossTab: false,
    onLogout: (e) => logouts.push(e.reason),
    sleep: async () => {},
    ...extra,
  });
  return { c, logouts };
}

test('reauthentication_required asks the app once with max_age, then the request is retried once with the new login', async () => {
  const gw = fakeGateway();
  const store = memoryStore();
  const asked = [];
  const { c, logouts } = client(gw, {
    refreshTokenStore: store,
    onReauthenticationRequired: async (event) => {
      asked.push(event);
      await c.login({ username: 'alice', password: 'secret' });
    },
  });
  await c.login({ username: 'alice', password: 'secret' });
  const response = await c.fetch('/account/password', { method: 'POST', body: 'new=s3cret' });
  assert.equal(response.status, 200);
  assert.deepEqual(asked, [{ maxAge: 600 }]);
  assert.deepEqual(api(gw).map((x) => [x.headers.get('Authorization'), x.body]), [
    ['Bearer at-1', 'new=s3cret'],
    ['Bearer at-2', 'new=s3cret'],
  ]);
  // The step-up login carries the session's refresh token, so the gateway
  // keeps the session (same device) rather than opening another one.
  assert.equal(logins(gw)[1].body, 'username=alice&password=secret&refresh_token=rt-1');
  assert.equal(store.get(), 'rt-2');
  assert.deepEqual(logouts, []);
});

test('concurrent step-up refusals share one prompt; each request is retried once', async () => {
  const gw = fakeGateway();
  let asked = 0;
  let open;
  const prompt = new Promise((r) => { open = r; });
  const { c } = client(gw, {
    onReauthenticationRequired: async () => {
      asked += 1;
      await prompt;
      await c.login({ username: 'alice', password: 'secret' });
    },
  });
  await c.login({ username: 'alice', password: 'secret' });
  const pending = Array.from({ length: 4 }, (_, i) => c.fetch(`/account/${i}`));
  await new Promise((r) => setTimeout(r, 20));
  open();
  const responses = await Promise.all(pending);
  assert.deepEqual(responses.map((r) => r.status), [200, 200, 200, 200]);
  assert.equal(asked, 1);
  assert.equal(logins(gw).length, 2);
  assert.equal(api(gw).length, 8, 'each request: refused, then retried');
});

test('a request sent before the step-up login and refused after it is retried without asking again', async () => {
  let release;
  const slow = new Promise((r) => { release = r; });
  const gw = fakeGateway({ accept: (login, call) => login >= 2 && !call.path.endsWith('/slow') });
  const slowGw = { ...gw, fetch: async (url, init) => {
    if (String(url).endsWith('/slow')) {
      const response = await gw.fetch(url, init);
      if (response.status === 401) await slow;
      return response.status === 401 ? stepUp() : response;
    }
    return gw.fetch(url, init);
  } };
  let asked = 0;
  const { c } = client(slowGw, {
    onReauthenticationRequired: async () => { asked += 1; await c.login({ username: 'alice', password: 'secret' }); },
  });
  await c.login({ username: 'alice', password: 'secret' });
  const late = c.fetch('/account/slow');
  assert.equal((await c.fetch('/account')).status, 200);
  release();
  // The late refusal came for a token from before the step-up login: the
  // client retries it with the new token instead of prompting a second time.
  const response = await late;
  assert.equal(asked, 1);
  assert.equal(response.status, 401, 'this fake refuses /slow whatever the token');
  assert.equal(api(gw).filter((x) => x.path.endsWith('/slow')).length, 2);
});

test('refused again after the re-login: the refusal goes to the caller, no second prompt, no logout', async () => {
  const gw = fakeGateway({ accept: () => false });
  let asked = 0;
  const { c, logouts } = client(gw, {
    onReauthenticationRequired: async () => { asked += 1; await c.login({ username: 'alice', password: 'secret' }); },
  });
  await c.login({ username: 'alice', password: 'secret' });
  const response = await c.fetch('/account');
  assert.equal(response.status, 401);
  assert.equal(response.headers.get('X-Portcullis-Error'), 'reauthentication_required');
  assert.equal(asked, 1);
  assert.equal(api(gw).length, 2);
  assert.deepEqual(logouts, []);
  assert.equal(c.loggedIn, true);
});

test('without a callback, or when it resolves false, the refusal goes to the caller untouched', async () => {
  for (const extra of [{}, { onReauthenticationRequired: async () => false }]) {
    const gw = fakeGateway();
    const { c, logouts } = client(gw, extra);
    await c.login({ username: 'alice', password: 'secret' });
    const response = await c.fetch('/account');
    assert.equal(response.status, 401);
    assert.equal((await response.json()).error, 'reauthentication_required');
    assert.equal(api(gw).length, 1, 'no retry');
    assert.equal(logins(gw).length, 1);
    assert.deepEqual(logouts, []);
    assert.equal(c.loggedIn, true, 'the session is fine; only this route wants more');
  }
});

test("a callback's error (a refused password) rejects the fetch and the session stays", async () => {
  const gw = fakeGateway();
  const wrong = { fetch: async (url, init) => (String(url).endsWith('/auth/login') && String(init.body).includes('nope') ? new Response('wrong password', { status: 401 }) : gw.fetch(url, init)) };
  const { c, logouts } = client(wrong, {
    onReauthenticationRequired: () => c.login({ username: 'alice', password: 'nope' }),
  });
  await c.login({ username: 'alice', password: 'secret' });
  await assert.rejects(c.fetch('/account'), (e) => e instanceof LoginError && e.status === 401);
  assert.deepEqual(logouts, []);
  assert.equal(c.loggedIn, true);
});

test('maxAge is null when the challenge names none', async () => {
  const asked = [];
  const gw = { fetch: async (url) => (String(url).endsWith('/auth/login') ? json({ access_token: 'at', expires_in: 60, refresh_token: 'rt' }) : stepUp(null)) };
  const { c } = client(gw, { onReauthenticationRequired: (event) => { asked.push(event); return false; } });
  await c.login({ username: 'alice', password: 'secret' });
  await c.fetch('/account');
  assert.deepEqual(asked, [{ maxAge: null }]);
});

test('cookie mode: the step-up login sends no refresh token in the body (the cookie carries it)', async () => {
  const gw = fakeGateway();
  const { c } = client(gw, {
    mode: 'cookie',
    onReauthenticationRequired: () => c.login({ username: 'alice', password: 'secret' }),
  });
  await c.login({ username: 'alice', password: 'secret' });
  assert.equal((await c.fetch('/account')).status, 200);
  assert.deepEqual(logins(gw).map((x) => x.body), ['username=alice&password=secret', 'username=alice&password=secret']);
});
