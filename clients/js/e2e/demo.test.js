// `portcullis demo` in headless Chromium: its page, built on
// portcullis-client in cookie mode, logs in, survives a reload (the
// HttpOnly cookie restores the session), shows the token's remaining life,
// and drops to its login form when an admin revokes the user.
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
let admin;
let adminToken;

before(async () => {
  const [listen, backend, adminPort] = [await freePort(), await freePort(), await freePort()];
  base = `http://127.0.0.1:${listen}`;
  admin = `http://127.0.0.1:${adminPort}`;
  demo = spawn(BIN, ['demo', '--listen', `127.0.0.1:${listen}`, '--backend-listen', `127.0.0.1:${backend}`, '--admin-listen', `127.0.0.1:${adminPort}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  let out = '';
  adminToken = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo printed no admin token:\n${out}`)), 20_000);
    demo.stdout.on('data', (chunk) => {
      out += chunk;
      const found = /--token (\S+)/.exec(out);
      if (found) { clearTimeout(timer); resolve(found[1]); }
    });
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

test('a first visit makes no refused request and logs no logout', { timeout: 30_000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = [];
  page.on('console', (message) => { if (message.type() === 'error') problems.push(`console: ${message.text()}`); });
  page.on('pageerror', (error) => problems.push(`page: ${error.message}`));
  page.on('response', (response) => { if (response.status() >= 400) problems.push(`${response.status()} ${response.url()}`); });
  await page.goto(`${base}/public/`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'logged out');
  // An absence has no event to wait for: give a late request (the
  // browser's own favicon fetch) a second to show up before looking.
  await page.waitForTimeout(1000);
  assert.deepEqual(problems, []);
  assert.equal(await page.textContent('#events'), '', 'no event before anyone logged in');
  await context.close();
});

test('the demo page: login, reload keeps the session, an admin revocation logs it out', { timeout: 60_000 }, async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(`${base}/public/`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'logged out');
  await page.click('#login button');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'logged in');
  await page.waitForFunction(() => /^\d+ s$/.test(document.getElementById('left').textContent));
  const left = Number((await page.textContent('#left')).split(' ')[0]);
  assert.ok(left > 0 && left <= 60, `remaining life ${left}`);

  await page.reload();
  await page.waitForFunction(() => document.getElementById('state').textContent === 'logged in');

  const revoked = await fetch(`${admin}/admin/users/alice/revoke`, { method: 'POST', headers: { Authorization: `Bearer ${adminToken}` } });
  assert.equal(revoked.status, 200);
  await page.click('#call');
  await page.waitForFunction(() => document.getElementById('state').textContent === 'logged out');
  assert.match(await page.textContent('#events'), /logged out \((token_revoked|invalid_grant)\)/);
  await context.close();
});
