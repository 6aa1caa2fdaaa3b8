// Mints ES256 ID tokens for bench/oidc.sh (Node's own crypto, no package):
//   node bench/oidc-tokens.mjs DIR ISSUER AUDIENCE COUNT
// writes DIR/jwks.json and DIR/openid-configuration.json (the static
// issuer's files), DIR/tokens.txt: COUNT distinct tokens, one a line,
// valid for two hours (a `jti` each, so no two are the same), and
// DIR/headers.txt: the `Authorization: Basic` value of each (user "ci").
import { generateKeyPairSync, sign, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, issuer, audience, countArg] = process.argv.slice(2);
const count = Number(countArg);
if (!dir || !issuer || !audience || !Number.isInteger(count) || count < 1) {
  console.error('usage: node oidc-tokens.mjs DIR ISSUER AUDIENCE COUNT');
  process.exit(2);
}
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'bench-1', use: 'sig', alg: 'ES256' };
writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [jwk] }));
writeFileSync(join(dir, 'openid-configuration.json'), JSON.stringify({
  issuer, jwks_uri: `${issuer}/jwks.json`, response_types_supported: ['id_token'],
  subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['ES256'],
}));
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const header = b64({ alg: 'ES256', kid: 'bench-1', typ: 'JWT' });
const now = Math.floor(Date.now() / 1000);
const lines = [];
for (let i = 0; i < count; i++) {
  const claims = { iss: issuer, aud: audience, sub: 'repo:acme/app:ref:refs/heads/main',
    repository_owner: 'acme', iat: now, nbf: now - 5, exp: now + 7200, jti: randomUUID() };
  const input = `${header}.${b64(claims)}`;
  const sig = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
  lines.push(`${input}.${sig.toString('base64url')}`);
}
writeFileSync(join(dir, 'tokens.txt'), lines.join('\n') + '\n');
const basic = lines.map((t) => 'Basic ' + Buffer.from(`ci:${t}`).toString('base64'));
writeFileSync(join(dir, 'headers.txt'), basic.join('\n') + '\n');
