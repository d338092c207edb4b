#!/usr/bin/env bash
# Long fuzzing of every libFuzzer target, then corpus minimization and a
# coverage report.  CI runs the short form (scripts/test.sh: seconds per target
# plus a replay of the committed corpora under `meson test --suite fuzz`); this
# is the hours-long form, run by hand or on a spare machine.
#
#   bash scripts/fuzz-long.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 1800); all targets run at once, niced, so the
# wall time is SECONDS (give each its own core for full speed).  Steps:
#   1. build-fuzz/ (clang, ASan+UBSan, -Dfuzzing=true) and build-cov/ (clang,
#      -fprofile-instr-generate -fcoverage-mapping: the corpus replay binaries);
#   2. each target fuzzes from its committed corpus into fuzz-out/TARGET/new,
#      crashes in fuzz-out/TARGET/artifacts (the script exits 1 if any);
#   3. `-merge=1` keeps the inputs that add coverage: tests/fuzz/CORPUS is
#      replaced by the minimized union (commit it);
#   4. llvm-cov reports line/function/region coverage of the files each target
#      exercises, from the minimized corpus, into fuzz-out/coverage.txt.
# Env: FUZZ_OUT (default fuzz-out), NO_MERGE=1 (keep tests/fuzz as it is),
#      SKIP_RUN=1 (only steps 3-4, on the FUZZ_OUT of an earlier run),
#      FUZZ_BUILD / COV_BUILD (build dirs, default build-fuzz / build-cov).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
SECS=${1:-1800}
shift || true
OUT=${FUZZ_OUT:-fuzz-out}
FB=${FUZZ_BUILD:-build-fuzz}
CB=${COV_BUILD:-build-cov}

# each target's corpus, and its leak check (MuPDF keeps parser pools on some broken inputs)
declare -A CORPUS=([fuzz_message]=corpus [fuzz_pickle]=corpus_pickle
	[fuzz_amqp_table]=corpus_amqp_table [fuzz_http]=corpus_http
	[fuzz_docconv]=corpus_docconv [fuzz_office]=corpus_office [fuzz_outbox]=corpus_outbox)
declare -A LEAKS=([fuzz_docconv]=0)
declare -A REPLAY=([fuzz_message]=fuzz_replay)
# the code each target is for (regex on source paths): the coverage reported
declare -A SOURCES=([fuzz_message]="src/protocol/" [fuzz_pickle]="src/protocol/pickle\\.c"
	[fuzz_amqp_table]="src/broker/amqp_table\\.c" [fuzz_http]="src/http/parse\\.c"
	[fuzz_docconv]="src/docconv/" [fuzz_office]="src/docconv/office"
	[fuzz_outbox]="src/tasks/canvas\\.c")
targets=("$@")
((${#targets[@]})) || targets=(fuzz_message fuzz_pickle fuzz_amqp_table fuzz_http fuzz_docconv
	fuzz_office fuzz_outbox)

[[ -f $FB/build.ninja ]] || CC=clang meson setup "$FB" -Dfuzzing=true \
	-Dintegration=false -Db_sanitize=address,undefined -Db_lundef=false || exit 1
[[ -f $CB/build.ninja ]] || CC=clang meson setup "$CB" -Dintegration=false \
	-Dc_args="-fprofile-instr-generate -fcoverage-mapping" \
	-Dc_link_args=-fprofile-instr-generate -Db_lundef=false || exit 1
replays=()
for t in "${targets[@]}"; do replays+=("${REPLAY[$t]:-${t}_replay}"); done
meson compile -C "$FB" "${targets[@]}" && meson compile -C "$CB" "${replays[@]}" || exit 1

mkdir -p "$OUT"
for t in "${targets[@]}"; do
	[[ ${SKIP_RUN:-0} == 1 ]] && break
	mkdir -p "$OUT/$t/new" "$OUT/$t/artifacts"
	ASAN_OPTIONS=detect_leaks=${LEAKS[$t]:-1}:allocator_may_return_null=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		nice -n 19 "$FB/tests/fuzz/$t" -max_total_time="$SECS" -timeout=20 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$OUT/$t/artifacts/" \
		"$OUT/$t/new" "tests/fuzz/${CORPUS[$t]}" >"$OUT/$t/log" 2>&1 &
done
wait

failed=0
: >"$OUT/summary.txt"
for t in "${targets[@]}"; do
	execs=$(grep -aoE 'stat::number_of_executed_units: *[0-9]+' "$OUT/$t/log" | grep -oE '[0-9]+$')
	crashes=$(find "$OUT/$t/artifacts" -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' | wc -l)
	((crashes)) && failed=1
	if [[ ${NO_MERGE:-0} != 1 ]] && ((crashes == 0)); then
		min="$OUT/$t/min"
		rm -rf "$min" && mkdir -p "$min"
		ASAN_OPTIONS=detect_leaks=0 "$FB/tests/fuzz/$t" -merge=1 -timeout=20 \
			-rss_limit_mb=2048 "$min" "tests/fuzz/${CORPUS[$t]}" "$OUT/$t/new" \
			>"$OUT/$t/merge.log" 2>&1
		# the minimized union replaces the generated part of the committed corpus
		# (files named by their SHA-1, as libFuzzer names them); hand-written seeds
		# and crash inputs kept as regression tests stay
		find "tests/fuzz/${CORPUS[$t]}" -type f -regextype posix-extended \
			-regex '.*/[0-9a-f]{40}' -delete
		cp -n "$min"/* "tests/fuzz/${CORPUS[$t]}/"
	fi
	# coverage of the sources the target is for, from the corpus now committed
	prof="$OUT/$t/cov.profraw"
	LLVM_PROFILE_FILE="$prof" "$CB/tests/fuzz/${REPLAY[$t]:-${t}_replay}" \
		"tests/fuzz/${CORPUS[$t]}" >/dev/null 2>&1
	llvm-profdata merge -sparse "$prof" -o "$OUT/$t/cov.profdata"
	cov=$(llvm-cov export -summary-only "$CB/tests/fuzz/${REPLAY[$t]:-${t}_replay}" \
		-instr-profile="$OUT/$t/cov.profdata" 2>/dev/null | SRC_RE="${SOURCES[$t]}" /usr/bin/python3 -c '
import json, os, re, sys
pat = re.compile(os.environ["SRC_RE"])
tot = {"lines": [0, 0], "functions": [0, 0], "regions": [0, 0]}
for f in json.load(sys.stdin)["data"][0]["files"]:
    if pat.search(f["filename"]):
        for k in tot:
            tot[k][0] += f["summary"][k]["covered"]
            tot[k][1] += f["summary"][k]["count"]
print(", ".join(f"{k} {c}/{n} ({100 * c / max(n, 1):.1f}%)" for k, (c, n) in tot.items()))')
	printf '%-16s %6ss %12s execs  %d crash(es)  corpus %4d files  %s\n' "$t" "$SECS" \
		"${execs:-?}" "$crashes" "$(find "tests/fuzz/${CORPUS[$t]}" -type f | wc -l)" "$cov" |
		tee -a "$OUT/summary.txt"
done
exit $failed
