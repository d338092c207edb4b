#!/usr/bin/env bash
# Build the cworker Debian package from this checkout:
#   packaging/build-deb.sh [OUTDIR]       (default OUTDIR: build-deb/ at the top)
# Copies the source tree (without build directories, .git and node_modules)
# to a scratch directory, puts packaging/debian/ at its top, runs
# `dpkg-buildpackage -us -uc -b` there and moves cworker_<version>_<arch>.deb
# and cworker-dev_<version>_<arch>.deb (and the .buildinfo/.changes) to
# OUTDIR. The checkout is never written to except OUTDIR. Needs the
# Build-Depends of packaging/debian/control (scripts/install-deps.sh
# installs them).
# Env: DEB_BUILD_OPTIONS (e.g. "nocheck parallel=2"), KEEP_SCRATCH=1.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build-deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
meson_version=$(sed -nE "s/^ *version *: *'([^']+)'.*/\1/p" "$top/meson.build" | head -n 1)
if [[ ${version%%-*} != "$meson_version" ]]; then
	echo "build-deb: packaging/debian/changelog says $version, meson.build says $meson_version" >&2
	exit 1
fi

scratch=$(mktemp -d -t cworker-deb.XXXXXX)
cleanup() { [[ ${KEEP_SCRATCH:-0} == 1 ]] || rm -rf "$scratch"; }
trap cleanup EXIT
src="$scratch/cworker-$version"
mkdir -p "$src"
# everything but build outputs and local caches
tar -C "$top" -cf - \
	--exclude=./.git --exclude='./build*' --exclude=node_modules --exclude=__pycache__ \
	--exclude=./subprojects/packagecache . | tar -C "$src" -xf -
cp -a "$top/packaging/debian" "$src/debian"

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
log="$scratch/dpkg-buildpackage.log"
echo "build-deb: building cworker $version for $arch in $src"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$log" 2>&1; then
	tail -n 60 "$log" >&2
	echo "build-deb: dpkg-buildpackage failed (log above)" >&2
	exit 1
fi
deb="cworker_${version}_${arch}.deb"
for f in "$scratch/$deb" "$scratch"/cworker_"${version}"_"${arch}".{buildinfo,changes}; do
	[[ -e $f ]] && mv -f "$f" "$out/"
done
# the task module development package
mv -f "$scratch"/cworker-dev_"${version}"_"${arch}".deb "$out/"
# the debug symbols package, when dh made one
mv -f "$scratch"/cworker-dbgsym_"${version}"_"${arch}".*deb "$out/" 2>/dev/null || true
cp "$log" "$out/dpkg-buildpackage.log"
echo "build-deb: $out/$deb ($(du -k "$out/$deb" | cut -f1) KiB)"
