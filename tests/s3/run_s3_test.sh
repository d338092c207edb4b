#!/usr/bin/env bash
# Run the S3 storage test driver against a local s3rver on 127.0.0.1.
#
# s3rver (npm, pinned in package.json) stores objects in a temp directory and
# serves the bucket "cw-test" path-style on 127.0.0.1:PORT and virtual-host
# style as cw-test.s3.localhost:PORT. s3rver 3.7.1 checks only the access key
# id of SigV4 requests ("Signature version 4 calculation is unimplemented" in
# its lib/middleware/authentication.js), so this script puts a SigV4 verifier
# in front of its routes: signature computed from the canonical request with
# the secret of s3rver's built-in key pair S3RVER/S3RVER, every x-amz-* header
# must be signed, and x-amz-content-sha256 must be the SHA-256 of the body. A
# wrong secret therefore gets 403 SignatureDoesNotMatch, as from AWS. Unsigned
# requests get 403 AccessDenied (a private bucket).
#
# Usage: bash tests/s3/run_s3_test.sh BUILD/tests/unit/test_storage_s3
# Exit 77 (meson: skipped) when node or the npm package is missing
# (install it with: npm ci --prefix tests/s3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
driver=${1:?usage: run_s3_test.sh TEST_DRIVER}

if ! command -v node >/dev/null; then
	echo "run_s3_test: node not found: skipped"
	exit 77
fi
if [[ ! -f $here/node_modules/s3rver/package.json ]]; then
	echo "run_s3_test: s3rver not installed (npm ci --prefix tests/s3): skipped"
	exit 77
fi

tmp=$(mktemp -d -t cw-s3-test.XXXXXX)
pid=
cleanup() {
	if [[ -n $pid ]]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/server.js" <<'EOF'
'use strict';
/* s3rver with a SigV4 verifier in front of its routes; prints nothing, writes the port. */
const crypto = require('crypto');
const fs = require('fs');
const { PassThrough } = require('stream');

const [s3rverDir, dataDir, portFile] = process.argv.slice(2);
const S3rver = require(s3rverDir);
const S3Error = require(s3rverDir + '/lib/models/error');

const REGION = 'us-east-1';
const KEYS = { S3RVER: 'S3RVER' }; /* s3rver's built-in account */

const sha256 = d => crypto.createHash('sha256').update(d).digest('hex');
const hmac = (k, d) => crypto.createHmac('sha256', k).update(d).digest();

function fail(code, message, status) {
  const e = new S3Error(code, message);
  if (status) e.status = status;
  throw e;
}

/* S3's URI encoding of a key: every byte but unreserved characters and '/'. */
function s3encode(s) {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const ch = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~\/]/.test(ch) ? ch : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

async function sigv4(ctx, next) {
  const auth = ctx.get('authorization');
  if (!auth) fail('AccessDenied', 'Access Denied');
  const m = /^AWS4-HMAC-SHA256 Credential=([^/,]+)\/(\d{8})\/([^/,]+)\/([^/,]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) fail('AuthorizationHeaderMalformed', 'not a SigV4 Authorization header');
  const [, keyId, day, region, service, signedList, signature] = m;
  const secret = KEYS[keyId];
  if (secret === undefined)
    fail('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
  if (region !== REGION || service !== 's3')
    fail('AuthorizationHeaderMalformed', `unexpected scope ${region}/${service}`);
  const amzDate = ctx.get('x-amz-date');
  const t = Date.parse(amzDate.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z'));
  if (!amzDate.startsWith(day) || !(Math.abs(Date.now() - t) < 15 * 60 * 1000))
    fail('RequestTimeTooSkewed', 'x-amz-date is missing, off the scope or too far from now');
  const payloadHash = ctx.get('x-amz-content-sha256');
  if (!/^[0-9a-f]{64}$/.test(payloadHash))
    fail('InvalidRequest', 'x-amz-content-sha256 must be the hex SHA-256 of the payload');

  const signed = signedList.split(';');
  const mustSign = ['host', ...Object.keys(ctx.headers).filter(h => h.startsWith('x-amz-'))];
  for (const h of mustSign)
    if (!signed.includes(h)) fail('AccessDenied', `header ${h} is not signed`);
  const values = {};
  const raw = ctx.req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    (values[name] = values[name] || []).push(raw[i + 1].trim().replace(/\s+/g, ' '));
  }
  const canonHeaders = signed.map(h => {
    if (!values[h]) fail('AccessDenied', `signed header ${h} was not sent`);
    return `${h}:${values[h].join(',')}\n`;
  }).join('');

  const url = ctx.req.url;
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  let decoded;
  try {
    decoded = decodeURIComponent(path);
  } catch (e) {
    fail('InvalidURI', 'bad %-escape in the path');
  }
  if (s3encode(decoded) !== path) fail('InvalidURI', 'path is not S3-encoded: ' + path);
  /* no request of the driver has a query string; sorted pairs suffice here */
  const query = q < 0 ? '' : url.slice(q + 1).split('&').map(p => (p.includes('=') ? p : p + '=')).sort().join('&');

  const canonical = [ctx.method, path, query, canonHeaders, signedList, payloadHash].join('\n');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  let k = hmac('AWS4' + secret, day);
  k = hmac(hmac(hmac(k, region), service), 'aws4_request');
  const want = hmac(k, toSign);
  if (!crypto.timingSafeEqual(want, Buffer.from(signature, 'hex')))
    fail('SignatureDoesNotMatch', 'The request signature we calculated does not match the ' +
         'signature you provided. Check your key and signing method.');

  if (ctx.method === 'PUT' || ctx.method === 'POST') {
    const chunks = [];
    for await (const c of ctx.req) chunks.push(c);
    const body = Buffer.concat(chunks);
    if (sha256(body) !== payloadHash)
      fail('XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not " +
           'match what was computed.', 400);
    const replay = new PassThrough();
    replay.end(body);
    ctx.req = replay; /* s3rver reads the object from ctx.req */
  }
  return next();
}

(async () => {
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory: dataDir,
    serviceEndpoint: 'localhost', /* cw-test.s3.localhost = bucket cw-test */
    configureBuckets: [{ name: 'cw-test', configs: [] }],
  });
  server.middleware.splice(1, 0, sigv4); /* after s3rver's logger, before its routes */
  const { port } = await server.run();
  fs.writeFileSync(portFile + '.tmp', String(port));
  fs.renameSync(portFile + '.tmp', portFile);
})().catch(err => {
  console.error(err);
  process.exit(1);
});
EOF

node "$tmp/server.js" "$here/node_modules/s3rver" "$tmp/data" "$tmp/port" \
	>"$tmp/server.log" 2>&1 &
pid=$!

for _ in $(seq 1 200); do          # up to 20 s
	[[ -s $tmp/port ]] && break
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "run_s3_test: s3rver exited early:" >&2
		cat "$tmp/server.log" >&2
		exit 1
	fi
	sleep 0.1
done
if [[ ! -s $tmp/port ]]; then
	echo "run_s3_test: s3rver did not start within 20 s" >&2
	cat "$tmp/server.log" >&2
	exit 1
fi

rc=0
CW_S3_PORT=$(cat "$tmp/port") CW_S3_BUCKET=cw-test "$driver" || rc=$?
if ((rc != 0)); then
	echo "run_s3_test: driver failed ($rc); s3rver log:" >&2
	tail -n 50 "$tmp/server.log" >&2
fi
exit "$rc"
