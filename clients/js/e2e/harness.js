// The end-to-end stage: a real portcullis (the built binary), the real demo
// backend, an app page served from another loopback origin, and Debian's
// Chromium driven headless through playwright-core (no browser download).

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.PORTCULLIS_BIN ?? path.resolve(here, '../../../target/debug/portcullis');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CLIENT = path.resolve(here, '../index.js');
const APP_PAGE = path.resolve(here, 'app.html');
export const ADMIN_TOKEN = 'e2e-admin-token-0123456789abcdef';
/** `[store] max_staleness`: the bound within which a revocation is seen. */
export const MAX_STALENESS_MS = 1000;

/** One free loopback port per name, all held until all are chosen, so no two coincide. */
async function freePorts(names) {
  const servers = await Promise.all(names.map(() => new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  })));
  const ports = Object.fromEntries(names.map((name, i) => [name, servers[i].address().port]));
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/**
 * A port chosen free can be taken by another test file's stack (they run
 * in parallel) before the gateway binds it; then `waitForPort` sees the
 * other listener. Whether the gateway and its admin listener are really
 * this stack's: every gateway answer carries `X-Request-Id`, and the admin
 * metrics name portcullis and take this stack's token.
 */
async function answersAsPortcullis(gateway, admin) {
  try {
    const answer = await fetch(`${gateway}/`);
    const metrics = await fetch(`${admin}/metrics`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    return answer.headers.has('x-request-id') && metrics.ok && (await metrics.text()).includes('portcullis_');
  } catch {
    return false;
  }
}

async function waitForPort(port, child, what) {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const open = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function gatewayConfig({ ports, cookie, app, routes = '' }) {
  return `[server]
listen = ["127.0.0.1:${ports.gateway}"]
admin_listen = "127.0.0.1:${ports.admin}"
admin_token_file = "admin.token"
threads = 1
shutdown_grace = "0s"
shutdown_timeout = "1s"

[store]
url = "sqlite://portcullis.db"
max_staleness = "${MAX_STALENESS_MS}ms"

[tokens]
issuer = "https://portcullis.e2e"
audience = "e2e"
access_ttl = "4s"
leeway = "0s"
refresh_hint = "3s"
signing_key = "e2e"

[[tokens.keys]]
kid = "e2e"
algorithm = "EdDSA"
private_key_file = "e2e.pem"

[[upstreams]]
name = "backend"
targets = ["127.0.0.1:${ports.backend}"]

[login]
upstream = "backend"
path = "/login"

[sessions]
cookie = ${cookie}

[cors]
allowed_origins = ["${app}"]
allow_credentials = ${cookie}

[[routes]]
path = "/"
upstream = "backend"
auth = "required"
${routes}`;
}

/** A static server for the app page and the client library. */
function appServer(port) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const file = url.pathname === '/portcullis-client.js' ? CLIENT : url.pathname === '/' ? APP_PAGE : null;
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    const type = file.endsWith('.js') ? 'text/javascript' : 'text/html; charset=utf-8';
    res.writeHead(200, { 'Content-Type': type, 'Cache-Control': 'no-store' });
    res.end(fs.readFileSync(file));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/**
 * Starts backend, gateway (cookie or bearer mode) and two app origins:
 * `app`, allowed by `[cors]`, and `foreign`, which is not. `routes` is
 * TOML appended to the configuration (more `[[routes]]`).
 */
export async function startStack({ mode, routes }) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startStackOnce({ mode, routes });
    } catch (error) {
      if (!(error instanceof PortTaken) || attempt === 3) throw error;
    }
  }
}

/** A port of the stack was taken by another listener; the stack is stopped. */
class PortTaken extends Error {}

async function startStackOnce({ mode, routes }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-e2e-'));
  const ports = await freePorts(['gateway', 'admin', 'backend', 'app', 'foreign']);
  const app = `http://127.0.0.1:${ports.app}`;
  execFileSync(BIN, ['keygen', '--algorithm', 'eddsa', '--out', dir, '--kid', 'e2e'], { stdio: 'ignore' });
  fs.writeFileSync(path.join(dir, 'admin.token'), ADMIN_TOKEN);
  const config = path.join(dir, 'portcullis.toml');
  fs.writeFileSync(config, gatewayConfig({ ports, cookie: mode === 'cookie', app, routes }));
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' };
  const children = [
    spawn(BIN, ['demo-backend', '--listen', `127.0.0.1:${ports.backend}`], { stdio: 'inherit', env }),
    spawn(BIN, ['serve', '--config', config], { stdio: 'inherit', env }),
  ];
  const servers = [];
  const gateway = `http://127.0.0.1:${ports.gateway}`;
  const adminUrl = `http://127.0.0.1:${ports.admin}`;
  const stack = {
    mode,
    gateway,
    app,
    foreign: `http://127.0.0.1:${ports.foreign}`,
    /** The page URL for this stack, on the allowed origin unless `origin` says. */
    page: (origin = app) => `${origin}/?gateway=${encodeURIComponent(gateway)}&mode=${mode}`,
    async admin(method, route) {
      const response = await fetch(adminUrl + route, { method, headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      if (!response.ok) throw new Error(`admin ${route}: ${response.status}`);
      return response.text();
    },
    /** `portcullis_refreshes_total{outcome="ok"}`: rotations that reached the store. */
    async refreshesOk() {
      const text = await this.admin('GET', '/metrics');
      const line = text.split('\n').find((l) => l.startsWith('portcullis_refreshes_total{outcome="ok"}'));
      return line ? Number(line.split(' ').at(-1)) : 0;
    },
    async stop() {
      for (const child of children) {
        if (child.exitCode === null) {
          child.kill('SIGTERM');
          await new Promise((resolve) => {
            const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 5000);
            child.once('exit', () => { clearTimeout(timer); resolve(); });
          });
        }
      }
      await Promise.all(servers.map((s) => new Promise((r) => { s.closeAllConnections?.(); s.close(r); })));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const port of [ports.app, ports.foreign]) servers.push(await appServer(port));
    await waitForPort(ports.backend, children[0], 'demo backend');
    await waitForPort(ports.gateway, children[1], 'portcullis');
    await waitForPort(ports.admin, children[1], 'portcullis admin');
  } catch (error) {
    await stack.stop();
    throw error.code === 'EADDRINUSE' ? new PortTaken(error.message) : error;
  }
  if (!(await answersAsPortcullis(gateway, adminUrl))) {
    await stack.stop();
    throw new PortTaken('another listener holds the gateway\'s port');
  }
  return stack;
}

/** Headless Chromium; playwright gives every launch a fresh profile. */
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Opens the app page in `context` and waits for the client to be ready. */
export async function openApp(context, url) {
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(url);
  await page.waitForFunction(() => window.app !== undefined);
  return page;
}
