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


node "$here/server.js" "$here/node_modules/s3rver" "$tmp/data" "$tmp/port" \
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
