#!/usr/bin/env bash
# Install everything cworker's build and test suites need on Debian 12.
#
# Idempotent: when every package is already installed it does nothing (no
# apt-get update, no network). Otherwise it runs `apt-get update` once and
# installs only the missing packages. Quiet on success, loud on failure.
#
# Usage: bash scripts/install-deps.sh        (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
	# build
	build-essential meson ninja-build pkg-config
	libhiredis-dev libjansson-dev
	# storage layer (src/storage): libcurl, and libcrypto for S3 payload hashes
	libcurl4-openssl-dev libssl-dev
	# the example task module (examples/modules/probe) and its test: MIME types
	libmagic-dev
	# document conversion (src/docconv): static MuPDF and the libraries it needs, Tesseract + English
	libmupdf-dev mupdf-tools libfreetype-dev libharfbuzz-dev libjbig2dec0-dev libopenjp2-7-dev
	libmujs-dev libgumbo-dev libjpeg-dev zlib1g-dev libtesseract-dev tesseract-ocr-eng
	# Office and web documents (src/docconv/office*.c) parse XML and HTML with libxml2
	libxml2-dev
	# their tests generate DOCX/XLSX with python3-docx/openpyxl and decks, ODT and ODS with
	# LibreOffice headless; bench/office_bench.py compares with pandoc
	python3-docx python3-openpyxl pandoc
	libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui
	# docconv tests build their corpus with PyMuPDF; the S3 tests sign requests with curl
	python3-fitz python3-pil curl
	# bench/docconv_bench.py compares OCR with the tesseract CLI
	tesseract-ocr
	# bench/layout_score.py scores pdftotext next to cworker
	poppler-utils
	# the db+postgresql:// result backend (libpq) and its tests: a real server, Python readers
	libpq-dev postgresql python3-sqlalchemy python3-psycopg2
	# the AMQP broker and rpc:// backend (rabbitmq-c) and their tests: a real RabbitMQ,
	# py-amqp for raw publishes, openssl for the amqps:// test's CA
	librabbitmq-dev rabbitmq-server python3-amqp openssl
	# integration tests: real redis, stock Python Celery (Debian's, used via /usr/bin/python3)
	redis-server redis-tools
	python3 python3-celery python3-kombu python3-redis python3-pytest python3-yaml
	# test_http.py parses /metrics with the reference Prometheus text parser
	python3-prometheus-client
	procps
	# packaging tests: the .deb (dpkg-buildpackage, dh), systemd-analyze verify
	# of the units, man -l of cworker(1)
	debhelper dpkg-dev systemd man-db
	# fuzzing (libFuzzer ships in libclang-rt) and leak checks
	clang libclang-rt-14-dev valgrind
)

die() { echo "install-deps: error: $*" >&2; exit 1; }

# The local S3 server of the storage tests (tests/s3, npm). Only where node and
# npm exist (the test skips itself otherwise); nothing to do when node_modules
# is newer than the lockfile, so a second run needs no network.
install_npm_deps() {
	local dir cmd
	dir="$(cd "$(dirname "$0")/.." && pwd)/tests/s3"
	command -v node >/dev/null && command -v npm >/dev/null || return 0
	[[ -f $dir/package.json ]] || return 0
	if [[ -f $dir/package-lock.json ]]; then
		[[ $dir/node_modules/.package-lock.json -nt $dir/package-lock.json &&
			$dir/node_modules/.package-lock.json -nt $dir/package.json ]] && return 0
		cmd=(npm ci --prefix "$dir" --no-audit --no-fund)
	else
		[[ -d $dir/node_modules/s3rver ]] && return 0
		cmd=(npm install --prefix "$dir" --no-audit --no-fund)
	fi
	local log
	log=$(mktemp -t cworker-install-deps-npm.XXXXXX)
	if ! "${cmd[@]}" >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		die "${cmd[*]} failed"
	fi
	rm -f "$log"
	echo "install-deps: npm packages installed in tests/s3"
}

[[ -r /etc/debian_version ]] || die "this script targets Debian 12 (no /etc/debian_version)"
command -v dpkg-query >/dev/null || die "dpkg-query not found"

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	[[ $status == ii* ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
	echo "install-deps: all ${#PACKAGES[@]} packages present"
	install_npm_deps
	exit 0
fi

SUDO=()
if ((EUID != 0)); then
	command -v sudo >/dev/null || die "not root and no sudo; missing: ${missing[*]}"
	SUDO=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
log=$(mktemp -t cworker-install-deps.XXXXXX)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
# One update per run, only because something is missing.
if ! "${SUDO[@]}" apt-get update -qq >"$log" 2>&1; then
	cat "$log" >&2
	die "apt-get update failed"
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
	cat "$log" >&2
	die "apt-get install failed for: ${missing[*]}"
fi

# Verify: a package list that silently changed names must not pass.
for p in "${missing[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	[[ $status == ii* ]] || die "package $p still not installed"
done
/usr/bin/python3 -c 'import celery, kombu, redis, pytest' ||
	die "/usr/bin/python3 cannot import celery/kombu/redis/pytest"
install_npm_deps
echo "install-deps: done"
