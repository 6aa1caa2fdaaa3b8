// Drives headless Chromium (Debian's /usr/bin/chromium) through a login:
//
//   node tests/oidc/browser.mjs --url https://127.0.0.1:PORT/login --user alice --password alice-pw
//        [--expect-error] [--steps full|login-only] [--timeout-ms 30000]
//        [--chromium /usr/bin/chromium] [--screenshot out.png]
//
// Opens --url (which should redirect to the provider's login form), fills
// input[name=login] / input[name=password], submits, follows the redirects back
// and prints ONE JSON line on stdout describing the final page (see README.md).
// Exit 0 on success; 1 (with a message on stderr, and a JSON line carrying
// "error" on stdout when a page was reached) on timeout, missing login form,
// failed login or missing #token; 2 on bad usage.

import { chromium } from 'playwright-core';

function usage(msg) {
  if (msg) console.error(`browser.mjs: ${msg}`);
  console.error('usage: node browser.mjs --url URL --user USER --password PASSWORD [--expect-error] [--steps full|login-only] [--timeout-ms N] [--chromium PATH] [--screenshot PATH]');
  process.exit(2);
}

const opts = {
  url: undefined,
  user: undefined,
  password: undefined,
  expectError: false,
  steps: 'full',
  timeoutMs: 30_000,
  chromium: process.env.CHROMIUM ?? '/usr/bin/chromium',
  screenshot: undefined,
};
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      i += 1;
      return argv[i];
    };
    switch (flag) {
      case '--url': opts.url = value(); break;
      case '--user': opts.user = value(); break;
      case '--password': opts.password = value(); break;
      case '--expect-error': opts.expectError = true; break;
      case '--steps': opts.steps = value(); break;
      case '--timeout-ms': opts.timeoutMs = Number(value()); break;
      case '--chromium': opts.chromium = value(); break;
      case '--screenshot': opts.screenshot = value(); break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!opts.url) usage('--url is required');
  if (opts.user === undefined || opts.password === undefined) usage('--user and --password are required');
  if (!['full', 'login-only'].includes(opts.steps)) usage('--steps must be full or login-only');
  if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) usage('--timeout-ms must be a positive number');
}

const STEP = opts.timeoutMs;
const proxyOrigin = new URL(opts.url).origin;
const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

// Last-resort guard so a wedged browser can never hang the test suite.
const guard = setTimeout(() => {
  console.error(`browser.mjs: overall deadline of ${(STEP * 5) / 1000}s exceeded`);
  process.exit(1);
}, STEP * 5);
guard.unref();

class StepError extends Error {}

let browser;
let page;
let context;
let lastDocument; // last non-redirect response of a main-frame navigation
let lastNavAt = Date.now();
let navigations = 0;
const cookieSetBy = new Map(); // cookie name -> origin of the last response that set it

async function pageState() {
  try {
    return await page.evaluate(() => ({
      ready: document.readyState,
      token: !!document.querySelector('#token'),
      loginForm: !!document.querySelector('input[name=login]'),
    }));
  } catch {
    return undefined; // navigating: execution context destroyed
  }
}

// Poll until pred(state) is true, or until the page has been quiet (loaded,
// no navigation) for quietMs when quietMs is given. Returns the last state,
// or undefined on timeout.
async function waitFor(pred, { timeout = STEP, quietMs } = {}) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    const st = await pageState();
    if (st && pred(st)) return st;
    if (st && quietMs !== undefined && st.ready === 'complete' && Date.now() - lastNavAt >= quietMs) return st;
    await sleep(100);
  }
  return undefined;
}

async function elementText(selector) {
  try {
    return await page.$eval(selector, (el) => {
      const v = (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) ? el.value : el.textContent;
      return (v ?? '').trim();
    });
  } catch {
    return null;
  }
}

async function report(stage, error) {
  let headers = {};
  let status = null;
  if (lastDocument) {
    status = lastDocument.status();
    try { headers = await lastDocument.allHeaders(); } catch { headers = lastDocument.headers(); }
  }
  let text = '';
  try { text = (await page.evaluate(() => document.body?.innerText ?? '')).slice(0, 2000); } catch { /* none */ }
  const cookies = (await context.cookies(proxyOrigin)).map((c) => ({
    name: c.name,
    domain: c.domain,
    path: c.path,
    httpOnly: c.httpOnly,
    secure: c.secure,
    sameSite: c.sameSite,
    expires: c.expires,
    // Cookies are not isolated by port: on 127.0.0.1 the provider's cookies are
    // held "for" the proxy too. setBy tells which origin's response set it.
    setBy: cookieSetBy.get(c.name) ?? null,
  }));
  const out = {
    url: page.url(),
    status,
    token: await elementText('#token'),
    command: await elementText('#login-command'),
    headers,
    cookies,
    text,
    stage,
  };
  if (error) out.error = error;
  if (opts.screenshot) {
    try { await page.screenshot({ path: opts.screenshot, fullPage: true }); } catch (e) { console.error(`browser.mjs: screenshot failed: ${e.message}`); }
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

let exitCode = 0;
try {
  browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    timeout: STEP,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  // A new context is a fresh, empty profile (no cookies, no cache).
  context = await browser.newContext({ ignoreHTTPSErrors: true });
  context.setDefaultTimeout(STEP);
  context.setDefaultNavigationTimeout(STEP);
  page = await context.newPage();
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) { lastNavAt = Date.now(); navigations += 1; }
  });
  page.on('response', async (resp) => {
    let origin;
    try { origin = new URL(resp.url()).origin; } catch { origin = undefined; }
    try {
      const sc = await resp.headerValue('set-cookie');
      for (const line of (sc ?? '').split('\n')) {
        const name = line.split('=')[0].trim();
        if (name) cookieSetBy.set(name, origin);
      }
    } catch { /* response gone */ }
  });
  page.on('response', (resp) => {
    const req = resp.request();
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) {
      const s = resp.status();
      if (s < 300 || s >= 400) lastDocument = resp;
    }
  });

  // Step 1: open the proxy's login URL; it should land on the provider's form.
  try {
    await page.goto(opts.url, { waitUntil: 'load', timeout: STEP });
  } catch (e) {
    throw new StepError(`opening ${opts.url} failed: ${e.message.split('\n')[0]}`);
  }
  const formWait = opts.expectError ? { timeout: STEP, quietMs: 1500 } : { timeout: STEP };
  const st = await waitFor((s) => s.loginForm, formWait);
  if (!st || !st.loginForm) {
    if (opts.expectError && st) {
      await report('no-login-form');
    } else {
      throw new StepError(`login form (input[name=login]) never appeared within ${STEP} ms; page is ${page.url()}`);
    }
  } else {
    // Step 2: fill in and submit the provider's login form.
    await page.fill('input[name=login]', opts.user);
    await page.fill('input[name=password]', opts.password);
    const before = navigations;
    await page.click('button[type=submit], input[type=submit]');
    const navEnd = Date.now() + STEP;
    while (navigations === before && Date.now() < navEnd) await sleep(50);
    if (navigations === before) throw new StepError(`submitting the login form caused no navigation within ${STEP} ms`);
    try { await page.waitForLoadState('load', { timeout: STEP }); } catch { /* handled below */ }

    // Step 3: follow the redirects back; wait for #token (or a settled page).
    const fullMode = opts.steps === 'full' && !opts.expectError;
    const done = await waitFor(
      (s) => s.token || (s.loginForm && s.ready === 'complete'),
      fullMode ? { timeout: STEP } : { timeout: STEP, quietMs: 1000 },
    );
    if (!done) throw new StepError(`timed out after ${STEP} ms waiting for the page after login (at ${page.url()})`);
    let stage = done.token ? 'done' : (done.loginForm ? 'login-failed' : 'settled');
    if (opts.steps === 'login-only') stage = done.loginForm ? 'login-failed' : 'login-only';
    if (fullMode && !done.token) {
      const msg = done.loginForm ? 'login failed: the provider showed its login form again' : 'no #token on the final page';
      await report(stage, msg);
      console.error(`browser.mjs: ${msg} (at ${page.url()})`);
      exitCode = 1;
    } else {
      await report(stage);
    }
  }
} catch (e) {
  const msg = e instanceof StepError ? e.message : `unexpected error: ${e.stack ?? e}`;
  console.error(`browser.mjs: ${msg}`);
  if (page) { try { await report('error', msg); } catch { /* ignore */ } }
  exitCode = 1;
} finally {
  if (browser) { try { await browser.close(); } catch { /* ignore */ } }
}
process.exit(exitCode);
