// Static OIDC issuer, like a Kubernetes service-account issuer: serves two
// files from a directory, re-read on EVERY request so tests can rewrite them.
//
//   node tests/oidc/static-issuer.mjs --port P --cert C --key K --dir D [--host 127.0.0.1]
//
//   GET /.well-known/openid-configuration -> D/openid-configuration.json
//   GET /jwks.json                        -> D/jwks.json
//   GET /__test/log                       -> JSON array of {method, path, status}
//   POST /__test/log/clear                -> empties the log
//   anything else                         -> 404
// If D/down exists, every request (except /__test/*) gets 503.
//
// stdout: `ready https://HOST:PORT`, then `req METHOD PATH STATUS` per request.

import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import { join } from 'node:path';

function usage(msg) {
  if (msg) console.error(`static-issuer.mjs: ${msg}`);
  console.error('usage: node static-issuer.mjs --port P --cert CERT.pem --key KEY.pem --dir DIR [--host 127.0.0.1]');
  process.exit(2);
}

const opts = { port: 0, host: '127.0.0.1' };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (!['--port', '--cert', '--key', '--dir', '--host'].includes(flag)) usage(`unknown argument ${flag}`);
    if (i + 1 >= argv.length) usage(`${flag} needs a value`);
    opts[flag.slice(2)] = argv[++i];
  }
  if (!opts.cert || !opts.key || !opts.dir) usage('--cert, --key and --dir are required');
  opts.port = Number(opts.port);
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('--port must be 0..65535');
}

const routes = new Map([
  ['/.well-known/openid-configuration', 'openid-configuration.json'],
  ['/jwks.json', 'jwks.json'],
]);
const requestLog = [];

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}

async function onRequest(req, res) {
  const { pathname } = new URL(req.url, 'https://placeholder.invalid');
  res.on('finish', () => {
    process.stdout.write(`req ${req.method} ${pathname} ${res.statusCode}\n`);
    if (!pathname.startsWith('/__test/')) requestLog.push({ method: req.method, path: pathname, status: res.statusCode });
  });
  try {
    if (pathname === '/__test/log' && req.method === 'GET') {
      send(res, 200, JSON.stringify(requestLog));
      return;
    }
    if (pathname === '/__test/log/clear' && req.method === 'POST') {
      requestLog.length = 0;
      send(res, 200, '{"ok":true}');
      return;
    }
    if (existsSync(join(opts.dir, 'down'))) {
      send(res, 503, '{"error":"down"}');
      return;
    }
    const file = routes.get(pathname);
    if (!file || (req.method !== 'GET' && req.method !== 'HEAD')) {
      send(res, 404, '{"error":"not found"}');
      return;
    }
    let body;
    try {
      body = await readFile(join(opts.dir, file));
    } catch (err) {
      if (err.code === 'ENOENT') {
        send(res, 404, '{"error":"file missing"}');
        return;
      }
      throw err;
    }
    send(res, 200, body);
  } catch (err) {
    console.error(`error handling ${req.method} ${pathname}:`, err);
    if (!res.headersSent) send(res, 500, '{"error":"internal"}');
    else res.destroy();
  }
}

const server = createServer({ cert: readFileSync(opts.cert), key: readFileSync(opts.key) }, (req, res) => {
  onRequest(req, res);
});
server.on('clientError', (err, socket) => {
  if (err.code !== 'ECONNRESET') console.error('clientError:', err.message);
  socket.destroy();
});
server.on('error', (err) => {
  console.error('server error:', err);
  process.exit(1);
});
server.listen(opts.port, opts.host, () => {
  process.stdout.write(`ready https://${opts.host}:${server.address().port}\n`);
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
