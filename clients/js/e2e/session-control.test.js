// Session control from the backend, in headless Chromium against
// `portcullis demo`: two browser contexts are two devices of the same user.
// Device A changes its password on the demo backend's page, whose answer
// carries `X-Portcullis-Session-Control: end-other-sessions`; device B drops
// to its login form on its next call, and device A carries on without
// logging in again (its client refreshes at once on `X-Token-Expires-In: 0`).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';

import { BIN, launch } from './harness.js';

async function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

let demo;
let browser;
let base;

before(async () => {
  const [listen, backend, admin] = [await freePort(), await freePort(), await freePort()];
  base = `http://127.0.0.1:${listen}`;
  demo = spawn(BIN, ['demo', '--listen', `127.0.0.1:${listen}`, '--backend-listen', `127.0.0.1:${backend}`, '--admin-listen', `127.0.0.1:${admin}`], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  for (const deadline = Date.now() + 20_000; ;) {
    const up = await fetch(`${base}/public/`).then((r) => r.ok, () => false);
    if (up) break;
    if (Date.now() > deadline) throw new Error('the demo did not answer');
    await new Promise((r) => setTimeout(r, 50));
  }
  browser = await launch();
});

after(async () => {
  await browser?.close();
  if (demo && demo.exitCode === null) {
    demo.kill('SIGTERM');
    await new Promise((resolve) => {
      const timer = setTimeout(() => { demo.kill('SIGKILL'); resolve(); }, 5000);
      demo.once('exit', () => { clearTimeout(timer); resolve(); });
    });
  }
});

const state = (page) => page.textContent('#state');
const waitForState = (page, wanted) =>
  page.waitForFunction((w) => document.getElementById('state').textContent === w, wanted);

/** A device: its own browser context (cookie jar), logged in as alice. */
async function device(name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const refused = [];
  page.on('response', (response) => {
    if (response.status() >= 400) refused.push(`${response.status()} ${new URL(response.url()).pathname}`);
  });
  await page.goto(`${base}/public/`);
  await waitForState(page, 'logged out');
  // Calls are made by the test alone, not by the page's timer.
  await page.uncheck('#auto');
  await page.fill('#login input[name=device_name]', name);
  await page.click('#login button');
  await waitForState(page, 'logged in');
  return { context, page, refused };
}

/** Clicks "Call /echo" and waits for its answer on the page. */
async function callEcho(page) {
  await page.evaluate(() => { document.getElementById('out').textContent = ''; });
  await page.click('#call');
  await page.waitForFunction(() => document.getElementById('out').textContent !== '');
  return page.textContent('#out');
}

test('a password change on device A signs device B out and keeps A signed in', { timeout: 60_000 }, async () => {
  const a = await device('laptop');
  const b = await device('phone');
  assert.match(await callEcho(a.page), /^200/);
  assert.match(await callEcho(b.page), /^200/);

  await a.page.fill('#password input[name=current_password]', 'wonderland');
  await a.page.fill('#password input[name=new_password]', 'looking-glass');
  await a.page.click('#password button');
  await a.page.waitForFunction(() => document.getElementById('events').textContent.includes('password changed'));
  assert.match(await a.page.textContent('#out'), /^200[\s\S]*"changed": true/);
  // The client refreshed at once, before the page saw the answer (the
  // newest event is on top).
  const events = await a.page.textContent('#events');
  const [changedAt, refreshedAt] = [events.indexOf('password changed'), events.indexOf('refreshed: new access token')];
  assert.ok(refreshedAt > changedAt, `refreshed before the answer was handed back:\n${events}`);

  // Device B: its next call is refused, its refresh fails, it drops to the form.
  await b.page.click('#call');
  await waitForState(b.page, 'logged out');
  assert.match(await b.page.textContent('#events'), /logged out \((token_revoked|invalid_grant)\)/);

  // Device A carries on with no login and no refused request.
  assert.match(await callEcho(a.page), /^200/);
  assert.equal(await state(a.page), 'logged in');
  assert.doesNotMatch(await a.page.textContent('#events'), /logged out/);
  assert.deepEqual(a.refused, [], 'device A never met a refusal');

  // The old password is gone; the new one logs device B in again.
  await b.page.fill('#login input[name=password]', 'wonderland');
  await b.page.click('#login button');
  await b.page.waitForFunction(() => /^401/.test(document.getElementById('out').textContent.trim()));
  await b.page.fill('#login input[name=password]', 'looking-glass');
  await b.page.click('#login button');
  await waitForState(b.page, 'logged in');
  await a.context.close();
  await b.context.close();
});
