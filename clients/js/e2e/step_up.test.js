// Step-up (RFC 9470) in headless Chromium: a route with `max_auth_age`
// refuses a login that is too old with `401 reauthentication_required`;
// portcullis-client asks the app once (`onReauthenticationRequired`), the
// app logs in again on the same session, and the refused request is
// retried and succeeds. In bearer and cookie mode, against a real portcullis
// and the demo backend. Run: node --test (PORTCULLIS_BIN names the binary).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { launch, openApp, startStack } from './harness.js';

/** The step-up route's bound, seconds (the smallest the gateway allows is 1). */
const MAX_AUTH_AGE = 2;
/** `auth_time` is in whole seconds and the bound is inclusive: past it for sure. */
const TOO_OLD_MS = (MAX_AUTH_AGE + 1) * 1000 + 500;

const ROUTES = `
[[routes]]
path = "/account"
upstream = "backend"
auth = "required"
max_auth_age = "${MAX_AUTH_AGE}s"
`;

for (const mode of ['bearer', 'cookie']) {
  describe(`step-up, ${mode} mode`, { timeout: 90_000 }, () => {
    let stack;
    let browser;
    before(async () => {
      stack = await startStack({ mode, routes: ROUTES });
      browser = await launch();
    });
    after(async () => {
      await browser?.close();
      await stack?.stop();
    });

    test('a step-up route prompts once, then succeeds on the same session', async () => {
      const context = await browser.newContext();
      const page = await openApp(context, stack.page());
      // The app's password prompt: record the challenge, log in again.
      await page.evaluate(() => {
        window.prompts = [];
        window.reauthenticate = async (event) => {
          window.prompts.push(event);
          const result = await app.login('alice', 'wonderland', 'laptop');
          if (!result.ok) throw new Error(`re-login failed: ${JSON.stringify(result)}`);
        };
      });
      assert.deepEqual(await page.evaluate(() => app.login('alice', 'wonderland', 'laptop')), { ok: true });
      // A fresh login is recent enough: no prompt.
      assert.deepEqual(await page.evaluate(() => app.call('/account')), { status: 200, code: null });
      const [device] = await page.evaluate(() => app.sessions());

      await page.waitForTimeout(TOO_OLD_MS);
      const before = await page.evaluate(() => seen.length);
      assert.deepEqual(await page.evaluate(() => app.call('/account')), { status: 200, code: null });
      assert.deepEqual(await page.evaluate(() => prompts), [{ maxAge: MAX_AUTH_AGE }]);
      const wire = await page.evaluate((n) => seen.slice(n).filter((s) => s.path !== '/auth/token'), before);
      assert.deepEqual(wire, [
        { path: '/account', status: 401, code: 'reauthentication_required' },
        { path: '/auth/login', status: 200, code: null },
        { path: '/account', status: 200, code: null },
      ]);

      // Right after the step-up: no second prompt.
      assert.deepEqual(await page.evaluate(() => app.call('/account')), { status: 200, code: null });
      assert.equal(await page.evaluate(() => prompts.length), 1);
      // The re-login kept the session: one device, the same sid.
      const devices = await page.evaluate(() => app.sessions());
      assert.deepEqual(devices.map((d) => [d.sid, d.current]), [[device.sid, true]]);
      assert.deepEqual(await page.evaluate(() => logouts), []);
      await context.close();
    });

    test('without a prompt the app gets the refusal, and the session stays', async () => {
      const context = await browser.newContext();
      const page = await openApp(context, stack.page());
      await page.evaluate(() => app.login('alice', 'wonderland', 'phone'));
      await page.waitForTimeout(TOO_OLD_MS);
      assert.deepEqual(await page.evaluate(() => app.call('/account')), { status: 401, code: 'reauthentication_required' });
      assert.deepEqual(await page.evaluate(() => app.call('/orders')), { status: 200, code: null });
      assert.deepEqual(await page.evaluate(() => logouts), []);
      await context.close();
    });
  });
}
