// Test-only OpenID Provider for the portcullis OIDC tests, built on oidc-provider.
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// stdout: one line `ready https://HOST:PORT` once listening, then one line
// `req METHOD PATH STATUS` per request served.  Everything else goes to stderr.
// See README.md in this directory for CONFIG.json and the /__test/ endpoints.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

// oidc-provider prints notices with console.info (stdout); keep stdout for the protocol.
console.info = (...args) => console.error(...args);

const { default: Provider } = await import('oidc-provider');

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const host = config.host ?? '127.0.0.1';

// ---------------------------------------------------------------- accounts

const accounts = new Map();
for (const [id, a] of Object.entries(config.accounts ?? {})) {
  accounts.set(id, {
    password: a.password,
    email: a.email ?? `${id}@example.test`,
    name: a.name ?? id,
    groups: Array.isArray(a.groups) ? [...a.groups] : [],
    disabled: a.disabled === true,
  });
}

function activeAccount(id) {
  const a = typeof id === 'string' ? accounts.get(id) : undefined;
  return a && !a.disabled ? a : undefined;
}

async function findAccount(_ctx, id) {
  if (!activeAccount(id)) return undefined; // unknown or disabled -> invalid_grant
  return {
    accountId: id,
    async claims() {
      // Read at claim time so refreshes see the CURRENT groups.
      const a = accounts.get(id);
      return {
        sub: id,
        preferred_username: id,
        name: a.name,
        email: a.email,
        email_verified: true,
        groups: [...a.groups],
      };
    },
  };
}

// ---------------------------------------------------------------- storage
// One module-level store shared by every Provider instance (instances are
// re-created on key rotation), so sessions, grants, codes and refresh tokens
// survive a rotation.  No size limit, lazy expiry.

const store = new Map();
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);
const SLACK_MS = 15_000; // provider's default clockTolerance

function sget(key) {
  const e = store.get(key);
  if (!e) return undefined;
  if (e.exp !== undefined && e.exp <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return e.value;
}
function sset(key, value, expiresIn) {
  const exp = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 + SLACK_MS : undefined;
  store.set(key, { value, exp });
}

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') sset(`sessionUid:${payload.uid}`, id, expiresIn);
    if (grantable.has(this.model) && payload.grantId) {
      const gkey = `grant:${payload.grantId}`;
      const members = sget(gkey) ?? [];
      if (!members.includes(key)) members.push(key);
      sset(gkey, members);
    }
    if (payload.userCode) sset(`userCode:${payload.userCode}`, id, expiresIn);
    sset(key, payload, expiresIn);
  }

  async find(id) { return sget(this.key(id)); }

  async findByUid(uid) {
    const id = sget(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = sget(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = sget(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    const gkey = `grant:${grantId}`;
    for (const key of sget(gkey) ?? []) store.delete(key);
    store.delete(gkey);
  }
}

// ---------------------------------------------------------------- keys

let keyCounter = 0;
function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  keyCounter += 1;
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `test-key-${keyCounter}-${randomBytes(4).toString('hex')}`,
    alg: 'RS256',
    use: 'sig',
  };
}
// First key signs (oidc-provider picks the first matching key); the rest are
// still published in the JWKS for verification.
let signingKeys = [newSigningKey()];

// ---------------------------------------------------------------- provider

const cookieKeys = [randomBytes(32).toString('hex')]; // stable across instances
const ttlConfig = {
  IdToken: 300,
  AccessToken: 300,
  AuthorizationCode: 60,
  RefreshToken: 86400,
  Interaction: 3600,
  Session: 14 * 86400,
  Grant: 14 * 86400,
  ...(config.ttl ?? {}),
};

const clients = (config.clients ?? []).map((c) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic', // client_secret_post is accepted too
  id_token_signed_response_alg: 'RS256',
  ...c,
}));

let issuer;
let provider;
let handler;

function buildProvider() {
  const p = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients: structuredClone(clients),
    jwks: { keys: signingKeys.map((k) => ({ ...k })) },
    findAccount,
    // Cookies are not isolated by port, so on 127.0.0.1 the browser sends these
    // to the proxy too: give them names that cannot clash with the proxy's.
    cookies: {
      keys: cookieKeys,
      names: { session: 'test_op_session', interaction: 'test_op_interaction', resume: 'test_op_interaction_resume' },
    },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name', 'groups'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    pkce: { required: () => true },
    // Refresh tokens for every client that has the refresh_token grant, whether or
    // not offline_access survived (oidc-provider strips it in some cases, e.g. a
    // prompt parameter without "consent").
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    rotateRefreshToken: true,
    ttl: ttlConfig,
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      userinfo: { enabled: true },
    },
    interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  p.on('server_error', (_ctx, err) => console.error('server_error:', err));
  // The wire error_description is generic ("grant request is invalid"); the
  // detail (e.g. "refresh token already used") only goes to stderr.
  for (const ev of ['grant.error', 'authorization.error', 'userinfo.error', 'introspection.error',
    'revocation.error', 'end_session.error', 'discovery.error', 'jwks.error']) {
    p.on(ev, (_ctx, err) => console.error(`${ev}: ${err.error ?? err.name}: ${err.error_detail ?? err.error_description ?? err.message}`));
  }
  return p;
}

// ---------------------------------------------------------------- helpers

const requestLog = [];

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

function readBody(req, limit = 1 << 20) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, value) {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
    pragma: 'no-cache',
  });
  res.end(html);
}

function loginPage(uid, clientId, { error, login } = {}) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test OP - Sign in</title></head>
<body>
<h1>Sign in</h1>
<p>Client: <span id="client">${escapeHtml(clientId ?? '')}</span></p>
${error ? `<p id="error" class="error" style="color:red">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}" autocomplete="off">
  <label>Username <input type="text" name="login" value="${escapeHtml(login ?? '')}" required autofocus></label><br>
  <label>Password <input type="password" name="password" required></label><br>
  <button type="submit">Sign in</button>
</form>
</body></html>`;
}

// ---------------------------------------------------------------- interactions

async function interactionGet(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (prompt.name === 'login') {
    sendHtml(res, 200, loginPage(uid, params.client_id));
    return;
  }
  if (prompt.name === 'consent') {
    // Consent is granted automatically with everything requested.
    const { accountId } = details.session;
    let grant;
    if (details.grantId) grant = await provider.Grant.find(details.grantId);
    if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
    const d = prompt.details ?? {};
    const scope = new Set([...(d.missingOIDCScope ?? []), ...String(params.scope ?? '').split(' ').filter(Boolean)]);
    scope.add('openid');
    if (String(params.scope ?? '').split(' ').includes('offline_access')) scope.add('offline_access');
    grant.addOIDCScope([...scope].join(' '));
    if (d.missingOIDCClaims?.length) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = {};
    if (!details.grantId) consent.grantId = grantId;
    await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    return;
  }
  sendHtml(res, 400, `<p id="error">unsupported prompt ${escapeHtml(prompt.name)}</p>`);
}

async function interactionPost(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (prompt.name !== 'login') {
    sendHtml(res, 400, `<p id="error">unexpected prompt ${escapeHtml(prompt.name)}</p>`);
    return;
  }
  const form = new URLSearchParams(await readBody(req));
  const login = form.get('login') ?? '';
  const password = form.get('password') ?? '';
  const account = activeAccount(login);
  if (!account || account.password !== password) {
    console.error(`login failed for ${JSON.stringify(login)}`);
    sendHtml(res, 401, loginPage(uid, params.client_id, { error: 'Invalid login', login }));
    return;
  }
  await provider.interactionFinished(req, res, {
    login: { accountId: login, amr: ['pwd'] },
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------- test control

async function testControl(req, res, url) {
  const { pathname } = url;
  if (req.method === 'GET' && pathname === '/__test/log') {
    sendJson(res, 200, requestLog);
    return;
  }
  if (req.method === 'POST' && pathname === '/__test/log/clear') {
    requestLog.length = 0;
    sendJson(res, 200, { ok: true });
    return;
  }
  if (req.method === 'POST' && pathname === '/__test/rotate') {
    const fresh = newSigningKey();
    const dropOld = ['1', 'true', 'yes'].includes(url.searchParams.get('drop_old') ?? '');
    signingKeys = dropOld ? [fresh] : [fresh, ...signingKeys];
    provider = buildProvider();
    handler = provider.callback();
    console.error(`rotated signing key: ${fresh.kid} (keys: ${signingKeys.map((k) => k.kid).join(', ')})`);
    sendJson(res, 200, { kid: fresh.kid, kids: signingKeys.map((k) => k.kid) });
    return;
  }
  const m = pathname.match(/^\/__test\/accounts\/([^/]+)\/(disable|enable|groups)$/);
  if (req.method === 'POST' && m) {
    const id = decodeURIComponent(m[1]);
    const account = accounts.get(id);
    if (!account) {
      sendJson(res, 404, { error: 'no such account' });
      return;
    }
    if (m[2] === 'disable') account.disabled = true;
    if (m[2] === 'enable') account.disabled = false;
    if (m[2] === 'groups') {
      let groups;
      try {
        groups = JSON.parse(await readBody(req));
      } catch {
        groups = undefined;
      }
      if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string')) {
        sendJson(res, 400, { error: 'body must be a JSON array of strings' });
        return;
      }
      account.groups = groups;
    }
    sendJson(res, 200, { id, disabled: account.disabled, groups: account.groups });
    return;
  }
  if (req.method === 'GET' && pathname === '/__test/accounts') {
    sendJson(res, 200, Object.fromEntries([...accounts].map(([id, a]) => [id, { disabled: a.disabled, groups: a.groups, email: a.email }])));
    return;
  }
  sendJson(res, 404, { error: 'unknown test endpoint' });
}

// ---------------------------------------------------------------- server

async function onRequest(req, res) {
  const url = new URL(req.url, 'https://placeholder.invalid');
  const { pathname } = url;
  res.on('finish', () => {
    process.stdout.write(`req ${req.method} ${pathname} ${res.statusCode}\n`);
    if (!pathname.startsWith('/__test/')) {
      requestLog.push({ method: req.method, path: pathname, status: res.statusCode });
    }
  });
  try {
    if (!handler) {
      sendJson(res, 503, { error: 'starting' });
      return;
    }
    if (pathname.startsWith('/__test/')) {
      await testControl(req, res, url);
      return;
    }
    const im = pathname.match(/^\/interaction\/([^/]+)$/);
    if (im && req.method === 'GET') {
      await interactionGet(req, res);
      return;
    }
    if (im && req.method === 'POST') {
      await interactionPost(req, res);
      return;
    }
    handler(req, res);
  } catch (err) {
    console.error(`error handling ${req.method} ${pathname}:`, err);
    if (!res.headersSent) {
      const status = err?.statusCode ?? err?.status ?? 500;
      sendHtml(res, status, `<!DOCTYPE html><p id="error">${escapeHtml(err?.name ?? 'Error')}: ${escapeHtml(err?.error_description ?? err?.message ?? err)}</p>`);
    } else {
      res.destroy();
    }
  }
}

const server = createServer({
  cert: readFileSync(config.cert),
  key: readFileSync(config.key),
}, (req, res) => { onRequest(req, res); });

server.on('clientError', (err, socket) => {
  if (err.code !== 'ECONNRESET') console.error('clientError:', err.message);
  socket.destroy();
});

server.listen(config.port ?? 0, host, () => {
  const { port } = server.address();
  issuer = config.issuer && Number(config.port) !== 0 ? config.issuer : `https://${host}:${port}`;
  provider = buildProvider();
  handler = provider.callback();
  process.stdout.write(`ready https://${host}:${port}\n`);
});

server.on('error', (err) => {
  console.error('server error:', err);
  process.exit(1);
});

function shutdown(sig) {
  console.error(`${sig}: shutting down`);
  // No graceful drain: tests want the port and the process gone at once.
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
