#!/usr/bin/env bash
# Quick start: install dependencies, build cworker, run it against a throwaway
# redis-server on a free loopback port, send the example tasks from a stock
# Python Celery producer (examples/producer.py) and stop everything.
# Exit status 0 when every example task returned what it should.
#
# Usage: bash scripts/quickstart.sh        (Debian 12, as root, from a clone)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=/usr/bin/python3            # Debian's python: sees python3-celery
BUILD=${BUILD_DIR:-build}

say() { printf '\n==> %s\n' "$*"; }

say "installing dependencies"
bash scripts/install-deps.sh

say "building cworker in $BUILD/"
if [[ ! -f $BUILD/build.ninja ]]; then
	meson setup "$BUILD" >/dev/null
fi
meson compile -C "$BUILD" >/dev/null
CWORKER=$BUILD/src/cworker
[[ -x $CWORKER ]] || { echo "quickstart: $CWORKER was not built" >&2; exit 1; }

tmp=$(mktemp -d -t cworker-quickstart.XXXXXX)
redis_pid=""
worker_pid=""
last_status=0

# Stop a process by PID: SIGTERM, wait up to $2 seconds, then SIGKILL it and any
# children it left behind (found by parent PID, never by name).
stop_pid() {
	local pid=$1 secs=$2 kids i
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "quickstart: pid $pid did not stop in ${secs}s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
	last_status=0
	wait "$pid" 2>/dev/null || last_status=$?
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_pid "$worker_pid" 20
	stop_pid "$redis_pid" 10
	if ((rc != 0)); then
		echo "quickstart: FAILED (exit $rc); last lines of the logs:" >&2
		for f in "$tmp"/cworker.log "$tmp"/redis.log; do
			[[ -f $f ]] && { echo "--- $f" >&2; tail -n 40 "$f" >&2; }
		done
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="redis://127.0.0.1:$port/0"

say "starting redis-server on 127.0.0.1:$port (data in $tmp, not saved)"
redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
	--daemonize no --logfile "$tmp/redis.log" &
redis_pid=$!
for ((i = 0; i < 100; i++)); do
	[[ $(redis-cli -p "$port" ping 2>/dev/null || true) == PONG ]] && break
	kill -0 "$redis_pid" 2>/dev/null || { echo "quickstart: redis-server exited" >&2; exit 1; }
	sleep 0.1
done
[[ $(redis-cli -p "$port" ping 2>/dev/null || true) == PONG ]] ||
	{ echo "quickstart: redis-server did not answer" >&2; exit 1; }

mkdir -p "$tmp/docs/in" "$tmp/docs/out"
say "starting cworker: $CWORKER -b $url --result-backend $url -c 2 -l info --docconv-roots $tmp/docs"
"$CWORKER" -b "$url" --result-backend "$url" -c 2 -l info --docconv-roots "$tmp/docs" \
	2>"$tmp/cworker.log" &
worker_pid=$!
for ((i = 0; i < 200; i++)); do
	grep -q 'ready\.' "$tmp/cworker.log" && break
	kill -0 "$worker_pid" 2>/dev/null || { echo "quickstart: cworker exited" >&2; exit 1; }
	sleep 0.1
done
grep -q 'ready\.' "$tmp/cworker.log" || { echo "quickstart: cworker not ready after 20s" >&2; exit 1; }
sed 's/^/    cworker| /' "$tmp/cworker.log"

say "running examples/producer.py"
"$PY" examples/producer.py "$url" "$url"

if "$CWORKER" --list-tasks | grep -q '^docconv.convert'; then
	say "converting sample documents: examples/convert_folder.py --make-samples (markdown, OCR auto)"
	"$PY" examples/convert_folder.py "$tmp/docs/in" "$tmp/docs/out" "$url" "$url" --make-samples
else
	say "cworker was built without docconv (MuPDF/Tesseract missing): no document conversion"
fi

say "stopping cworker (SIGTERM, warm shutdown)"
stop_pid "$worker_pid" 20
worker_pid=""
tail -n 3 "$tmp/cworker.log" | sed 's/^/    cworker| /'
if ((last_status != 0)); then
	echo "quickstart: cworker exited with status $last_status after SIGTERM (expected 0)" >&2
	exit 1
fi
say "quickstart OK"
