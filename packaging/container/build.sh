#!/usr/bin/env bash
# Build the cworker image (packaging/container/Containerfile) with podman,
# or buildah when podman is missing:
#   packaging/container/build.sh [TAG]          (default localhost/cworker:<version>)
# Env:
#   BASE=IMAGE     Debian 12 base image (default docker.io/library/debian:bookworm-slim)
#   BOOTSTRAP=1    no registry reachable: make the base image locally with
#                  mmdebstrap from the apt sources this machine uses, import
#                  it as localhost/debian:bookworm-cworker-base, build on it
#   ENGINE=podman|buildah
#   ISOLATION=chroot  run the RUN steps in a chroot instead of an OCI runtime
#                  (hosts where crun/runc cannot set up cgroups or namespaces)
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -nE "s/^ *version *: *'([^']+)'.*/\1/p" "$top/meson.build" | head -n 1)
tag=${1:-localhost/cworker:$version}
base=${BASE:-docker.io/library/debian:bookworm-slim}

engine=${ENGINE:-}
if [[ -z $engine ]]; then
	if command -v podman >/dev/null; then engine=podman
	elif command -v buildah >/dev/null; then engine=buildah
	else
		echo "build.sh: neither podman nor buildah is installed (apt-get install podman)" >&2
		exit 1
	fi
fi

if [[ ${BOOTSTRAP:-0} == 1 ]] && "$engine" image exists localhost/debian:bookworm-cworker-base 2>/dev/null &&
	[[ ${REBOOTSTRAP:-0} != 1 ]]; then
	base=localhost/debian:bookworm-cworker-base
	echo "build.sh: reusing $base (REBOOTSTRAP=1 makes it again)"
elif [[ ${BOOTSTRAP:-0} == 1 ]]; then
	command -v mmdebstrap >/dev/null || { echo "build.sh: BOOTSTRAP=1 needs mmdebstrap" >&2; exit 1; }
	base=localhost/debian:bookworm-cworker-base
	rootfs=$(mktemp -t cworker-rootfs.XXXXXX.tar)
	trap 'rm -f "$rootfs"' EXIT
	echo "build.sh: bootstrapping a Debian 12 rootfs with mmdebstrap"
	# the same mirrors apt uses here (sources.list and sources.list.d)
	mmdebstrap --variant=apt --include=ca-certificates bookworm "$rootfs"
	"$engine" import "$rootfs" "$base"
fi

isolation=()
[[ -n ${ISOLATION:-} ]] && isolation=(--isolation "$ISOLATION")
echo "build.sh: $engine building $tag from $base${ISOLATION:+ (isolation $ISOLATION)}"
case $engine in
podman)
	podman build "${isolation[@]}" --format docker --build-arg "BASE=$base" -t "$tag" \
		-f "$top/packaging/container/Containerfile" "$top"
	;;
buildah)
	buildah build "${isolation[@]}" --format docker --build-arg "BASE=$base" -t "$tag" \
		-f "$top/packaging/container/Containerfile" "$top"
	;;
*)
	echo "build.sh: unknown ENGINE=$engine" >&2
	exit 1
	;;
esac
echo "build.sh: built $tag"
