// portcullis-client and session control from the backend: a success that
// carries `X-Token-Expires-In: 0` (the backend ended the user's other
// sessions, so this device's token is already spent) triggers one
// immediate refresh, shared by every response that says so, before the
// response is handed back. Run: node --test
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient } from '../index.js';

function json(body, headers = {}) {
  return new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json', ...headers } });
}

/** A fake gateway: tokens `at-N`; `api(call, state)` answers API calls. */
function fakeGateway(api) {
  const calls = [];
  const state = { refreshes: 0, generation: 0, current: null };
  const pair = () => {
    state.generation += 1;
    state.current = `at-${state.generation}`;
    return { access_token: state.current, token_type: 'Bearer', expires_in: 300, refresh_token: `rt-${state.generation}` };
  };
  const fetch = async (url, init = {}) => {
    const call = { path: new URL(String(url), 'http://gw.test').pathname, auth: new Headers(init.headers).get('Authorization') };
    calls.push(call);
    await new Promise((r) => setImmediate(r));
    if (call.path === '/auth/login') return json(pair());
    if (call.path === '/auth/token') {
      state.refreshes += 1;
      return json(pair());
    }
    return api(call, state);
  };
  return { fetch, calls, state };
}

function client(gateway) {
  const timers = [];
  const c = createClient({
    fetch: gateway.fetch,
    baseUrl: 'https://gw.test',
    random: () => 0.5,
    setTimeout: (fn, ms) => { const t = { fn, ms }; timers.push(t); return t; },
    clearTimeout: (t) => { if (t) t.cleared = true; },
    sleep: async () => {},
  });
  return { c, timers };
}

/** `/account/password` answers with the hint 0; everything else plainly. */
const passwordChange = (call) => (call.path === '/account/password' ? json({ changed: true }, { 'X-Token-Expires-In': '0' }) : json({ ok: true }));

test('X-Token-Expires-In: 0 refreshes once, at once, before the response is handed back', async () => {
  const gw = fakeGateway(passwordChange);
  const { c, timers } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  const response = await c.fetch('/account/password', { method: 'POST' });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), { changed: true });
  assert.equal(gw.state.refreshes, 1, 'refreshed before fetch resolved');
  assert.deepEqual(timers.filter((t) => !t.cleared), [], 'no timer: the refresh was immediate');
  await c.fetch('/orders');
  assert.equal(gw.calls.at(-1).auth, 'Bearer at-2', 'the next call carries the new token');
  assert.equal(gw.state.refreshes, 1);
});

test('concurrent responses with X-Token-Expires-In: 0 share one refresh', async () => {
  const gw = fakeGateway(() => json({ ok: true }, { 'X-Token-Expires-In': '0' }));
  const { c } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  const responses = await Promise.all([1, 2, 3].map(() => c.fetch('/account/password', { method: 'POST' })));
  assert.deepEqual(responses.map((r) => r.status), [200, 200, 200]);
  assert.equal(gw.state.refreshes, 1);
});

test('a refresh ahead already scheduled does not delay the immediate one', async () => {
  let hint = '40';
  const gw = fakeGateway(() => json({ ok: true }, { 'X-Token-Expires-In': hint }));
  const { c, timers } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  await c.fetch('/orders');
  const ahead = timers.filter((t) => t.ms > 0);
  assert.equal(ahead.length, 1, 'a refresh ahead is scheduled');
  hint = '0';
  await c.fetch('/account/password', { method: 'POST' });
  assert.equal(gw.state.refreshes, 1, 'refreshed now, not at the scheduled moment');
  assert.ok(ahead[0].cleared, 'the scheduled refresh is dropped');
});

test('a response with a positive hint still schedules the refresh ahead', async () => {
  const gw = fakeGateway(() => json({ ok: true }, { 'X-Token-Expires-In': '30' }));
  const { c, timers } = client(gw);
  await c.login({ username: 'alice', password: 'secret' });
  await c.fetch('/orders');
  assert.equal(gw.state.refreshes, 0);
  assert.equal(timers.filter((t) => t.ms > 0).length, 1);
});
