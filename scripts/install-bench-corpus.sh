#!/usr/bin/env bash
# Install the Debian 12 documentation packages whose PDF manuals make the
# real-PDF corpus of bench/docconv_bench.py (`--corpus debian`). Not part of
# install-deps.sh: the tests and CI do not need them (about 55 MB of .debs).
#
# What lands (PDFs, pages counted with MuPDF; the bench deduplicates by content):
#   r-doc-pdf            /usr/share/R/doc/manual/*.pdf   R manuals + reference (~3,100 pages)
#   octave-doc           /usr/share/doc/octave/*.pdf     Octave manual, liboctave, refcards (~1,230)
#   pari-doc             /usr/share/pari/doc/*.pdf       PARI/GP user's guide, libpari, tutorials (~1,260)
#   valgrind             /usr/share/doc/valgrind/valgrind_manual.pdf.gz (~400)
#   gnuplot-doc          /usr/share/doc/gnuplot/gnuplot.pdf (~310)
#   gri-pdf-doc          /usr/share/doc/gri/gri.pdf.gz (~285)
#   why3-doc-pdf         /usr/share/doc/why3-doc-pdf/manual.pdf (~185)
#   maxima-doc           /usr/share/maxima/*/doc/maximabook-*.pdf (~155)
#   python-reportlab-doc /usr/share/doc/python-reportlab-doc/reportlab-userguide.pdf (~135)
#   ghostscript-doc      /usr/share/doc/ghostscript/GS9_Color_Management.pdf (42, image-heavy)
# Together with the PDFs install-deps.sh already brings in (bzip2, nettle,
# fontconfig, gnucobol, libtasn1, ...), about 7,000 pages.
#
# Idempotent: nothing is fetched when every package is installed.
# Usage: bash scripts/install-bench-corpus.sh     (as root, or with sudo available)
set -euo pipefail

PACKAGES=(r-doc-pdf octave-doc pari-doc valgrind gnuplot-doc gri-pdf-doc why3-doc-pdf
	maxima-doc python-reportlab-doc ghostscript-doc)

die() { echo "install-bench-corpus: error: $*" >&2; exit 1; }

[[ -r /etc/debian_version ]] || die "this script targets Debian 12 (no /etc/debian_version)"
missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	[[ $status == ii* ]] || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
	SUDO=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "not root and no sudo; missing: ${missing[*]}"
		SUDO=(sudo)
	fi
	echo "install-bench-corpus: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	log=$(mktemp -t cworker-bench-corpus.XXXXXX)
	trap 'rm -f "$log"' EXIT
	"${SUDO[@]}" apt-get update -qq >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
	"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1 ||
		{ cat "$log" >&2; die "apt-get install failed for: ${missing[*]}"; }
fi

# Minimal images often tell dpkg to drop /usr/share/doc (path-exclude in
# /etc/dpkg/dpkg.cfg.d/): the packages are then installed without their PDFs.
for f in /usr/share/R/doc/manual/R-intro.pdf /usr/share/doc/octave/octave.pdf \
	/usr/share/doc/valgrind/valgrind_manual.pdf.gz; do
	[[ -e $f ]] || die "$f is missing after installation (a dpkg path-exclude for" \
		"/usr/share/doc? see /etc/dpkg/dpkg.cfg.d/)"
done
n=$(find /usr/share/doc /usr/share/R/doc /usr/share/pari/doc /usr/share/maxima \
	\( -name '*.pdf' -o -name '*.pdf.gz' \) 2>/dev/null | wc -l)
echo "install-bench-corpus: ${#PACKAGES[@]} packages present, $n PDF paths (before deduplication)"
