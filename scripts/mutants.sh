#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Mutation testing: apply each hand-written fault of scripts/mutants/list to
# a copy of the tree, run the tests that should catch it, and print a table
# (mutant, killed by, seconds). Host killers (cargo test -p <crate>) run
# first; the modules of the mutants killed in QEMU are all built first and
# shipped in one guest of the 6.12 debug kernel (scripts/guest/mutants.sh),
# which runs the unmutated module through the same kselftests once before
# any mutant: a killer that fails on the original is no killer, and the
# table is refused. A mutant whose original text is not found stops the run.
# Fails when fewer than 90% of the mutants that are not equivalent were
# killed, and lists the survivors.
#
# Usage: scripts/mutants.sh            (make mutants)
#   DMLU_MUTANTS=name,name  only those mutants (a quick loop; the threshold
#                           still applies to them)
#   DMLU_MUTANTS_LIST=FILE  another list
. "$(dirname "$0")/lib.sh"
export PATH="$HOME/.cargo/bin:$PATH"

[ "${1:-}" != -h ] && [ "${1:-}" != --help ] || { sed -n '3,18p' "$0"; exit 0; }
list=${DMLU_MUTANTS_LIST:-$TOP/scripts/mutants/list}
out=$TOP/out/mutants
series=6.12 flavour=debug min_score=90
py=(python3 "$TOP/scripts/mutants/mutants.py")
t_start=$(date +%s)

# Stale mutants first: every original text must be in the tree.
"${py[@]}" check "$list" "$TOP" || die "fix or drop the stale mutant in $list"

declare -A FILE KILL EQUIV RESULT SECS WHY
names=()
while IFS=$'\t' read -r name file kill equiv; do
	if [ -n "${DMLU_MUTANTS:-}" ] && [[ ",$DMLU_MUTANTS," != *",$name,"* ]]; then
		continue
	fi
	names+=("$name")
	FILE[$name]=$file KILL[$name]=$kill EQUIV[$name]=$equiv
done < <("${py[@]}" table "$list")
[ ${#names[@]} -gt 0 ] || die "no mutant selected (DMLU_MUTANTS=${DMLU_MUTANTS:-})"

# A copy of the tree to mutate; each mutant's file is restored after it.
tree=$out/tree
mkdir -p "$out"
# By content, and written files get a new time: cargo must never take a
# file put back with its old time for the one it built a mutant from.
rsync -rlpD --checksum --delete --exclude /out --exclude /tools/target --exclude /.git \
	"$TOP/" "$tree/"
restore() { cp "$TOP/${FILE[$1]}" "$tree/${FILE[$1]}"; }
mutate() { "${py[@]}" apply "$list" "$1" "$tree"; }

# host_test CRATE LOG [LIMIT]: cargo test of one crate in the copy (a
# mutant may make a test loop: it gets three times the unmutated run).
declare -A HOST_LIMIT
host_test() {
	# A mutant may also make a test grow without bound: 4 GiB at most.
	(ulimit -v 4194304 && cd "$tree/tools" && CARGO_TARGET_DIR=$out/target timeout "${3:-1800}" \
		cargo test --locked -q -p "$1") >"$2" 2>&1
}

# --- host killers ------------------------------------------------------------
host_crates=()
guest_names=()
for name in "${names[@]}"; do
	[ "${EQUIV[$name]}" = - ] || continue
	for k in ${KILL[$name]}; do
		case "$k" in
		host:*) [[ " ${host_crates[*]} " == *" ${k#host:} "* ]] || host_crates+=("${k#host:}") ;;
		esac
	done
done
for crate in "${host_crates[@]}"; do
	log "unmutated tree: cargo test -p $crate"
	host_test "$crate" "$out/original-$crate.log" ||
		die "the unmutated tree fails cargo test -p $crate (see $out/original-$crate.log): no table"
	# Timed once built: the limit is for the tests, not the first build.
	s=$(date +%s)
	host_test "$crate" "$out/original-$crate.log" ||
		die "the unmutated tree fails cargo test -p $crate (see $out/original-$crate.log): no table"
	HOST_LIMIT[$crate]=$((3 * ($(date +%s) - s) + 60))
done
for name in "${names[@]}"; do
	if [ "${EQUIV[$name]}" != - ]; then
		RESULT[$name]=EQUIVALENT SECS[$name]=0
		continue
	fi
	guest_tests=""
	for k in ${KILL[$name]}; do
		case "$k" in
		host:*)
			[ -z "${RESULT[$name]:-}" ] || continue
			mutate "$name"
			s=$(date +%s)
			rc=0
			host_test "${k#host:}" "$out/$name.log" "${HOST_LIMIT[${k#host:}]}" || rc=$?
			if [ "$rc" != 0 ]; then
				RESULT[$name]=$k
				[ "$rc" != 124 ] || RESULT[$name]="$k (time limit)"
				grep -q 'could not compile' "$out/$name.log" && RESULT[$name]="$k (does not compile)"
				WHY[$name]=$(grep -m1 -E -- "--- FAILED|^error\\[" "$out/$name.log" || true)
			fi
			SECS[$name]=$(($(date +%s) - s))
			restore "$name"
			log "$name: ${RESULT[$name]:-not killed by $k}"
			;;
		guest:*) guest_tests="$guest_tests,${k#guest:}" ;;
		esac
	done
	if [ -z "${RESULT[$name]:-}" ] && [ -n "$guest_tests" ]; then
		guest_names+=("$name")
		KILL[$name]=${guest_tests#,}
	fi
done

# --- guest killers: build every module, then one guest ----------------------
if [ ${#guest_names[@]} -gt 0 ]; then
	kdir=$("$TOP/scripts/kernel.sh" "$flavour" "$series")
	ship=$out/guest
	rm -rf "$ship"
	mkdir -p "$ship"
	log "building the unmutated module and ${#guest_names[@]} mutants against $kdir"
	ko=$("$tree/scripts/build-module.sh" "$kdir" "$out/build/original")
	cp "$ko" "$ship/original.ko"
	all_tests=()
	built=()
	for name in "${guest_names[@]}"; do
		mutate "$name"
		s=$(date +%s)
		if ko=$("$tree/scripts/build-module.sh" "$kdir" "$out/build/$name" 2>"$out/$name-build.log"); then
			cp "$ko" "$ship/$name.ko"
			built+=("$name")
			for t in ${KILL[$name]//,/ }; do
				[[ " ${all_tests[*]} " == *" $t "* ]] || all_tests+=("$t")
			done
		else
			# Killed by the compiler only if rustc refused it: a build
			# refused for a warning is a mutant to fix, not a kill.
			if grep -q '^error\[' "$out/build/$name/build.log" 2>/dev/null; then
				RESULT[$name]=compiler
			else
				RESULT[$name]="NOT RUN (build refused: warnings)"
			fi
			SECS[$name]=$(($(date +%s) - s))
			WHY[$name]=$(grep -m1 -E '^(error|warning)' "$out/build/$name/build.log" 2>/dev/null || true)
		fi
		restore "$name"
	done
	remaining=("${built[@]}")
	boot=0 original_done=0
	: >"$ship/limits"
	while [ ${#remaining[@]} -gt 0 ]; do
		boot=$((boot + 1))
		{
			[ "$original_done" = 1 ] || echo "original $(IFS=,; echo "${all_tests[*]}")"
			for name in "${remaining[@]}"; do echo "$name ${KILL[$name]}"; done
		} >"$ship/plan"
		run=$out/guest-$boot
		limit=$((2400 + 900 * ${#remaining[@]}))
		log "boot $boot: the unmutated module first, then ${#remaining[@]} mutants (log: $run/ktap.log)"
		DMLU_GUEST_EXTRA=$ship "$TOP/scripts/guest.sh" --flavour "$flavour" --series "$series" \
			--run /usr/libexec/dmlu/mutants.sh --out "$run" --timeout "$limit" \
			>"$out/guest-$boot.log" 2>&1 || true
		ktap=$run/ktap.log
		if [ "$original_done" = 0 ]; then
			bad=$(grep -a '^DMLU-MUTANT-ORIGINAL ' "$ktap" | awk '$3 != "pass"' || true)
			[ -z "$bad" ] || die "the unmutated module fails its killers, so no table: $bad (see $ktap)"
			for t in "${all_tests[@]}"; do
				line=$(grep -a "^DMLU-MUTANT-ORIGINAL $t " "$ktap" || true)
				[ -n "$line" ] || die "the unmutated module did not finish $t (see $ktap, $run/console.log)"
				secs=$(awk '{print $4}' <<<"$line")
				echo "$t $((2 * secs + 60))" >>"$ship/limits"
				log "unmutated module: $t passed in ${secs}s"
			done
			original_done=1
		fi
		while read -r _ name verdict test secs why; do
			if [ "$verdict" = killed ]; then RESULT[$name]=$test; else RESULT[$name]=SURVIVED; fi
			SECS[$name]=$secs WHY[$name]=$why
		done < <(grep -a '^DMLU-MUTANT ' "$ktap" | tr -d '\r')
		# A mutant that started but has no result took the guest down.
		started=$(grep -a '^DMLU-MUTANT-START ' "$ktap" | tail -n1 | awk '{print $2}' | tr -d '\r')
		if [ -n "$started" ] && [ -z "${RESULT[$started]:-}" ]; then
			RESULT[$started]="guest died (${KILL[$started]})" SECS[$started]=-
			WHY[$started]=$(grep -a -m1 -F -f "$TOP/scripts/splat-patterns" "$run/console.log" || echo "no result; see $run/console.log")
		fi
		left=()
		for name in "${remaining[@]}"; do [ -n "${RESULT[$name]:-}" ] || left+=("$name"); done
		[ ${#left[@]} -lt ${#remaining[@]} ] || die "boot $boot made no progress (see $out/guest-$boot.log, $ktap)"
		remaining=("${left[@]}")
	done
fi

# --- the table ---------------------------------------------------------------
total=${#names[@]} killed=0 equivalent=0 survivors=()
{
	echo "| mutant | file | killed by | seconds |"
	echo "|---|---|---|---:|"
	for name in "${names[@]}"; do
		r=${RESULT[$name]:-SURVIVED}
		case "$r" in
		SURVIVED | NOT\ RUN*) survivors+=("$name") ;;
		EQUIVALENT) equivalent=$((equivalent + 1)) ;;
		*) killed=$((killed + 1)) ;;
		esac
		echo "| $name | ${FILE[$name]} | $r | ${SECS[$name]:-0} |"
	done
} >"$out/table.md"
{
	for name in "${names[@]}"; do
		printf '%s: %s\n' "$name" "${WHY[$name]:-${EQUIV[$name]}}"
	done
} >"$out/details.txt"
printf '%-44s %-44s %s\n' mutant "killed by" seconds
for name in "${names[@]}"; do
	printf '%-44s %-44s %s\n' "$name" "${RESULT[$name]:-SURVIVED}" "${SECS[$name]:-0}"
done
scored=$((total - equivalent))
elapsed=$(($(date +%s) - t_start))
echo
echo "killed $killed of $total mutants ($equivalent equivalent, not run: $killed/$scored = $((scored ? 100 * killed / scored : 0))%) in $((elapsed / 60)) min $((elapsed % 60)) s"
echo "table: $out/table.md; first failure per mutant: $out/details.txt"
for name in "${names[@]}"; do
	[ "${RESULT[$name]:-}" != EQUIVALENT ] || echo "equivalent: $name: ${EQUIV[$name]}"
done
if [ ${#survivors[@]} -gt 0 ]; then
	echo "survivors: ${survivors[*]}"
fi
if [ $((100 * killed)) -lt $((min_score * scored)) ]; then
	die "fewer than $min_score% of the mutants were killed"
fi
