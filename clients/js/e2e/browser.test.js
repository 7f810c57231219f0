// portcullis-client in headless Chromium against a real portcullis, a real
// backend, and an app page on another origin; each scenario in bearer and
// cookie mode. Run: node --test (PORTCULLIS_BIN names the binary).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { launch, MAX_STALENESS_MS, openApp, startStack } from './harness.js';

/** How long the page may take to notice a revocation: the staleness bound,
 * plus one polling period and a margin for the browser. */
const POLL_MS = 300;
const NOTICE_MS = MAX_STALENESS_MS + POLL_MS + 3000;
/** Past a token's expiry for the gateway too: `exp` is in whole seconds
 * and the gateway refuses only once the second is over. */
const EXPIRED_MS = 1500;

for (const mode of ['bearer', 'cookie']) {
  describe(`${mode} mode`, { timeout: 90_000 }, () => {
    let stack;
    let browser;
    before(async () => {
      stack = await startStack({ mode });
      browser = await launch();
    });
    after(async () => {
      await browser?.close();
      await stack?.stop();
    });

    /** A fresh browser profile context (a "device") with the app open. */
    async function device() {
      const context = await browser.newContext();
      const page = await openApp(context, stack.page());
      return { context, page };
    }

    test('login and calls from another origin', async () => {
      const { context, page } = await device();
      assert.deepEqual(await page.evaluate(() => app.login('alice', 'wonderland', 'laptop')), { ok: true });
      assert.deepEqual(await page.evaluate(() => app.call('/orders')), { status: 200, code: null });
      assert.equal(await page.textContent('#status'), 'logged-in');
      const wrong = await page.evaluate(() => app.login('alice', 'nope', 'laptop'));
      assert.deepEqual(wrong, { error: 'LoginError', status: 401 });
      await context.close();
    });

    test('short-lived tokens: refresh ahead while active, 401 retry after idling', async () => {
      const { context, page } = await device();
      await page.evaluate(() => app.login('alice', 'wonderland', 'laptop'));
      // Active: responses carry X-Token-Expires-In and the client refreshes
      // ahead at a jittered moment, so no call is ever refused.
      await page.evaluate((ms) => app.poll(ms), POLL_MS);
      await page.waitForFunction(() => tokens.includes('refresh'));
      await page.evaluate(() => app.stopPolling());
      const active = await page.evaluate(() => seen.filter((s) => s.path === '/orders'));
      assert.ok(active.length > 0);
      assert.ok(active.every((s) => s.status === 200), JSON.stringify(active));

      // Idle past expiry: the next call is refused token_expired, the client
      // refreshes once and retries, and the app sees only the 200. (A
      // refresh ahead still pending from the last poll moves the expiry.)
      await page.waitForFunction((m) => Date.now() > app.expiresAt() + m, EXPIRED_MS);
      const before = await page.evaluate(() => seen.length);
      assert.deepEqual(await page.evaluate(() => app.call('/orders')), { status: 200, code: null });
      const wire = await page.evaluate((n) => seen.slice(n), before);
      assert.deepEqual(
        wire.map((s) => [s.path, s.status, s.code]),
        [['/orders', 401, 'token_expired'], ['/auth/token', 200, null], ['/orders', 200, null]],
      );
      await context.close();
    });

    test('two tabs whose tokens expire together: one rotation reaches the store, both keep working', async () => {
      const context = await browser.newContext();
      const a = await openApp(context, stack.page());
      const b = await openApp(context, stack.page());
      await a.evaluate(() => app.login('alice', 'wonderland', 'two tabs'));
      // The other tab receives the token over BroadcastChannel.
      await b.waitForFunction(() => tokens.includes('tab'));
      const expiresAt = await a.evaluate(() => app.expiresAt());
      assert.equal(await b.evaluate(() => app.expiresAt()), expiresAt);
      await a.waitForFunction(([t, m]) => Date.now() > t + m, [expiresAt, EXPIRED_MS]);
      const rotations = await stack.refreshesOk();
      const results = await Promise.all([a, b].map((p) => p.evaluate(() => app.call('/orders'))));
      assert.deepEqual(results, [{ status: 200, code: null }, { status: 200, code: null }]);
      assert.equal(await stack.refreshesOk(), rotations + 1, 'exactly one rotation');
      await context.close();
    });

    test('the user revoked through the admin API: the page drops to logged out', async () => {
      const { context, page } = await device();
      await page.evaluate(() => app.login('alice', 'wonderland', 'laptop'));
      await page.evaluate((ms) => app.poll(ms), POLL_MS);
      await stack.admin('POST', '/admin/users/alice/revoke');
      await page.waitForFunction(() => document.getElementById('status').textContent === 'logged-out', null, { timeout: NOTICE_MS });
      const reasons = await page.evaluate(() => logouts);
      assert.equal(reasons.length, 1, `onLogout once, no retry loop: ${reasons}`);
      await page.evaluate(() => app.stopPolling());
      await context.close();
    });

    test('a device signed out from another one drops to logged out', async () => {
      const laptop = await device();
      const phone = await device();
      await laptop.page.evaluate(() => app.login('alice', 'wonderland', 'laptop'));
      await phone.page.evaluate(() => app.login('alice', 'wonderland', 'phone'));
      await phone.page.evaluate((ms) => app.poll(ms), POLL_MS);
      const sessions = await laptop.page.evaluate(() => app.sessions());
      const target = sessions.find((s) => s.device === 'phone' && !s.current);
      assert.ok(target, JSON.stringify(sessions));
      await laptop.page.evaluate((sid) => app.revokeSession(sid), target.sid);
      await phone.page.waitForFunction(() => document.getElementById('status').textContent === 'logged-out', null, { timeout: NOTICE_MS });
      assert.deepEqual(await laptop.page.evaluate(() => app.call('/orders')), { status: 200, code: null });
      await phone.page.evaluate(() => app.stopPolling());
      await laptop.context.close();
      await phone.context.close();
    });

    test('a disallowed origin gets nothing readable', async () => {
      const context = await browser.newContext();
      const page = await openApp(context, stack.page(stack.foreign));
      assert.deepEqual(await page.evaluate(() => app.login('alice', 'wonderland', 'foreign')), { error: 'TypeError', status: undefined });
      const gateway = stack.gateway;
      for (const path of ['/orders', '/auth/sessions', '/.well-known/jwks.json']) {
        assert.deepEqual(await page.evaluate((url) => app.raw(url), gateway + path), { error: 'TypeError' });
      }
      assert.equal(await page.textContent('#status'), 'ready');
      await context.close();
    });
  });
}
