#!/usr/bin/env bash
# Smoke-test a built image without a container runtime (for hosts where
# `podman run` cannot start containers): mount the image's file system, run
# its /usr/bin/cworker in a chroot as the image's user against a throwaway
# redis-server on loopback, send cworker.add from Debian's python3-celery,
# stop it with SIGTERM. Also checks that the runtime image holds no -dev
# package and no unresolved library, and has the health check's curl.
#   packaging/container/smoke-test.sh [IMAGE]   (default localhost/cworker:<version>)
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -nE "s/^ *version *: *'([^']+)'.*/\1/p" "$top/meson.build" | head -n 1)
image=${1:-localhost/cworker:$version}
engine=$(command -v podman || command -v buildah)

mnt=$("$engine" image mount "$image")
work=$(mktemp -d -t cworker-smoke.XXXXXX)
redis_pid='' worker_pid=''
cleanup() {
	[[ -n $worker_pid ]] && kill -KILL "$worker_pid" 2>/dev/null || true
	[[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null || true
	"$engine" image unmount "$image" >/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "smoke-test: FAIL: $*" >&2; exit 1; }

chroot "$mnt" /usr/bin/cworker --version | grep -q "cworker $version" || fail "--version"
[[ -x $mnt/usr/bin/curl ]] || fail "no curl for the HEALTHCHECK"
ndev=$(chroot "$mnt" dpkg-query -W -f='${Package}\n' | grep -c -- '-dev$' || true)
((ndev == 0)) || fail "$ndev -dev packages in the runtime image"
if chroot "$mnt" ldd /usr/bin/cworker | grep -q 'not found'; then fail "unresolved libraries"; fi
uid=$(chroot "$mnt" id -u cworker)
((uid != 0)) || fail "cworker user is root"

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no \
	>"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

chroot --userspec="$uid:$uid" "$mnt" env -i \
	CELERY_BROKER_URL="redis://127.0.0.1:$port/0" CELERY_RESULT_BACKEND="redis://127.0.0.1:$port/1" \
	/usr/bin/cworker -c 2 -l info --without-heartbeat >"$work/cworker.log" 2>&1 &
worker_pid=$!
for _ in $(seq 100); do grep -q 'ready\.' "$work/cworker.log" && break; sleep 0.1; done
grep -q 'ready\.' "$work/cworker.log" || { cat "$work/cworker.log" >&2; fail "worker not ready"; }

/usr/bin/python3 - "$port" <<'PY' || fail "round trip"
import sys
from celery import Celery
port = sys.argv[1]
app = Celery(broker=f"redis://127.0.0.1:{port}/0", backend=f"redis://127.0.0.1:{port}/1")
assert app.send_task("cworker.add", args=(20, 22)).get(timeout=20) == 42
PY
kill -TERM "$worker_pid"
rc=0
wait "$worker_pid" || rc=$?
worker_pid=''
((rc == 0)) || { cat "$work/cworker.log" >&2; fail "exit status $rc after SIGTERM"; }
echo "smoke-test: $image OK (runs as uid $uid, cworker.add round trip, warm shutdown exit 0)"
