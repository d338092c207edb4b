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
