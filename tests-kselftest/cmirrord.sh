#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The real server: LVM2's cmirrord (built from Debian's lvm2 source by
# scripts/cmirrord.sh) on a single-node corosync, serving clustered-core and
# clustered-disk mirrors, first through our module, then through the
# in-tree C module where the kernel has it. For each log type: create
# (sync), the initial resync to 100%, O_DIRECT writes checked on both legs
# against what was acknowledged, status and table, suspend/resume, a
# reload with the same uuid, a second mirror at the same time, removal,
# and rmmod.
#
# A passive listener (ulog-test-server --listen-only) traces every request
# the kernel sends. The two modules' streams are compared phase by phase:
# the same lifecycle requests (CTR, GET_REGION_SIZE, RESUME, PRESUSPEND,
# POSTSUSPEND, DTR) in the same order, the same CTR strings byte for byte,
# and the same regions marked. Intended differences, not compared: how many
# IN_SYNC (ours asks once per region and pass), when a FLUSH follows clears
# alone (ours sends it lazily in both modes), and how requests are grouped
# in flight. The request counts of both are printed. The C module's half
# needs a kernel without DEBUG_ATOMIC_SLEEP (see have_c below).

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
. "$(dirname "$0")/lib_stress.sh"
require_env dmsetup losetup corosync corosync-quorumtool cmirrord ulog-test-server mirror-check

MB=16                      # 32 regions of 512 KiB
SECTORS=$((MB * 2048))
WRITES=96                  # per write phase, the same for both modules
SEED=4242

# The C module's mark_region sleeps in atomic context (upstream bug): on a
# DEBUG_ATOMIC_SLEEP kernel every write would splat. Its half runs on the
# kernels without it (the stock Debian series of make check).
have_c=0
[ -f "$DMLU_C_MODULE" ] && ! grep -qw __might_resched /proc/kallsyms && have_c=1
# Per module: 2 log types x 10 checks, the stream and rmmod; then the
# comparisons.
per_log=10
ktap_print_header
required_c_missing=0
[ "${DMLU_REQUIRE_C_MODULE:-0}" = 1 ] && [ "$have_c" = 0 ] && required_c_missing=1
ktap_set_plan $((2 + (1 + have_c) * (2 * per_log + 1) + have_c * 3 + required_c_missing))
trap cm_cleanup EXIT

# stop PID: SIGTERM, then SIGKILL after 5 s (cmirrord refuses to exit while
# it serves a log).
stop() {
	local i
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null
	for i in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

cm_cleanup() {
	local dm
	for dm in $(dmsetup ls 2>/dev/null | awk '/^dmlu-cm/ {print $1}' | sort -r); do
		dmsetup resume "$dm" 2>/dev/null
		dmsetup remove "$dm" 2>/dev/null
	done
	stop_test_server
	stop "${CM_PID:-}"
	stop "${COROSYNC_PID:-}"
	stop "${SYSLOG_PID:-}"
	stress_cleanup
}

# --- corosync (one node, knet on loopback), cmirrord, the listener -------

unload_module
ip link set lo up 2>/dev/null
mkdir -p /etc/corosync /var/lib/corosync /var/log/corosync
cat >/etc/corosync/corosync.conf <<'EOF'
totem {
	version: 2
	cluster_name: dmlu-cm
	transport: knet
	crypto_cipher: none
	crypto_hash: none
}
nodelist {
	node {
		ring0_addr: 127.0.0.1
		nodeid: 1
		name: n1
	}
}
quorum {
	provider: corosync_votequorum
}
logging {
	to_stderr: yes
	to_syslog: no
	to_logfile: no
}
EOF
corosync -f >"$WORK/corosync.log" 2>&1 &
COROSYNC_PID=$!
quorate() { corosync-quorumtool -s 2>/dev/null | grep -q 'Quorate: *Yes'; }
up=0
for i in $(seq 300); do quorate && { up=1; break; }; sleep 0.1; done
check "single-node corosync is up and quorate" test $up = 1
[ $up = 1 ] || tail -n 20 "$WORK/corosync.log" | sed 's/^/# corosync: /'

# cmirrord logs to syslog. (A background program that keeps the test's
# output open keeps the kselftest runner waiting: all are stopped at exit.)
syslogd -n -O "$WORK/syslog" >/dev/null 2>&1 &
SYSLOG_PID=$!
cmirrord -f >"$WORK/cmirrord.out" 2>&1 &
CM_PID=$!
sleep 1
check "cmirrord runs" kill -0 "$CM_PID"

rm -f "$TRACE"
start_test_server --listen-only
phase() { echo "# phase $1" >>"$TRACE"; }

# --- the scenario, for one module -----------------------------------------

# A dm-linear log device for clustered-disk (cmirrord finds disk logs under
# /dev/mapper only), over the loop device LOGDEV.
LOGDEV=""
logdev_make() {
	LOGDEV=$(new_loop "$WORK/cm.logdev" 4) || return 1
	dmsetup create dmlu-cm-logdev --table "0 8192 linear $LOGDEV 0"
}

# cm_table NAME KIND: the table of mirror NAME (its uuid is dmlu-cm-NAME),
# a clustered-core or clustered-disk log, sync.
cm_table() {
	local name=$1 kind=$2 legs="" dev args
	for dev in ${MLEGS[$name]}; do legs="$legs $dev 0"; done
	if [ "$kind" = disk ]; then
		args="5 dmlu-cm-$name clustered-disk /dev/mapper/dmlu-cm-logdev 1024 sync"
	else
		args="4 dmlu-cm-$name clustered-core 1024 sync"
	fi
	echo "0 $SECTORS mirror userspace $args 2$legs 1 handle_errors"
}

cm_sync() { sync_of "dmlu-cm-$1"; }
cm_wait_sync() {
	local i
	for i in $(seq 600); do
		[ "$(cm_sync "$1")" = 32/32 ] && return 0
		sleep 0.2
	done
	note "dmlu-cm-$1 not in sync: $(dmsetup status "dmlu-cm-$1")"
	return 1
}

# cm_write NAME [--more]: WRITES O_DIRECT writes of mirror-check (the same
# for both modules; with --more, after those of the last call); the legs
# then hold exactly what was acknowledged.
cm_write() {
	mirror-check write "/dev/mapper/dmlu-cm-$1" --journal "$WORK/$1.journal" \
		--seed "$SEED" --writes "$WRITES" ${2:-} >"$WORK/writer.$1.out" 2>&1 &&
		grep -q '^errors=0$' "$WORK/writer.$1.out" && legs_hold_acked "$1"
}

# scenario KIND: the phases for one log type, 10 checks.
scenario() {
	local kind=$1 name=$1 st tbl want_st
	mirror_legs "$name" "$MB" || return 1
	phase "$kind create"
	check "$LABEL $kind: create a sync mirror" \
		timeout 120 dmsetup create "dmlu-cm-$name" --table "$(cm_table "$name" "$kind")"
	phase "$kind resync"
	check "$LABEL $kind: initial resync to 32/32" cm_wait_sync "$name"
	phase "$kind write"
	check "$LABEL $kind: O_DIRECT writes, both legs hold every acknowledged write" \
		cm_write "$name"
	phase "$kind status"
	st=$(dmsetup status "dmlu-cm-$name")
	tbl=$(dmsetup table "dmlu-cm-$name")
	if [ "$kind" = disk ]; then
		want_st=" 32/32 1 AA 3 clustered-disk [0-9]+:[0-9]+ A\$"
	else
		want_st=" 32/32 1 AA 1 clustered-core\$"
	fi
	check "$LABEL $kind: status ($st)" grep -Eq "$want_st" <<<"$st"
	check "$LABEL $kind: table repeats the log arguments" \
		grep -q " mirror userspace [45] dmlu-cm-$name clustered-$kind .*1024 sync 2 " <<<"$tbl"
	phase "$kind suspend"
	suspend_resume() {
		dmsetup suspend "dmlu-cm-$name" && dmsetup resume "dmlu-cm-$name" && cm_wait_sync "$name"
	}
	check "$LABEL $kind: suspend and resume, still in sync" suspend_resume
	phase "$kind reload"
	reload() {
		dmsetup reload "dmlu-cm-$name" --table "$tbl" && dmsetup resume "dmlu-cm-$name" &&
			cm_wait_sync "$name" && [ "$(dmsetup table "dmlu-cm-$name")" = "$tbl" ]
	}
	check "$LABEL $kind: reload with the same uuid" reload
	phase "$kind second"
	second() {
		mirror_legs "$name-2" "$MB" &&
			timeout 120 dmsetup create "dmlu-cm-$name-2" --table "$(cm_table "$name-2" core)" &&
			cm_wait_sync "$name-2" &&
			cm_write "$name-2" && cm_write "$name" --more
	}
	check "$LABEL $kind: a second mirror at the same time, both written and checked" second
	dmsetup remove "dmlu-cm-$name-2"
	mirror_free_legs "$name-2"
	phase "$kind remove"
	check "$LABEL $kind: remove" dmsetup remove "dmlu-cm-$name"
	# What a failed check may have left.
	dmsetup remove "dmlu-cm-$name" 2>/dev/null
	mirror_free_legs "$name"
	no_timeout() { ! log_has "request timed out"; }
	check "$LABEL $kind: no request timed out" no_timeout
}

# run_with LABEL MODULE: the scenario for both log types through MODULE.
run_with() {
	LABEL=$1
	mark_log
	phase "module $LABEL"
	insmod "$2" || return 1
	logdev_make
	scenario core
	scenario disk
	dmsetup remove dmlu-cm-logdev
	losetup -d "$LOGDEV"
	check "$LABEL: the module unloads" rmmod dm_log_userspace
	phase "end $LABEL"
	counts=$(awk -v l="$LABEL" '/^# phase module / {on = ($4 == l)} on && / type=/ {
		sub("type=", "", $4); n[$4]++; t++ } END { for (k in n) printf "%s=%d ", k, n[k]; printf "total=%d", t }' "$TRACE")
	note "$LABEL: requests under cmirrord: $counts"
}

run_with ours "$DMLU_MODULE"
[ "$have_c" = 1 ] && run_with c "$DMLU_C_MODULE"

# --- our stream against the C module's --------------------------------------

# stream LABEL WHAT: per phase, the lifecycle requests in order (lifecycle),
# the CTR strings and sizes (ctr), or the set of regions marked (marks).
stream() {
	awk -v l="$1" -v what="$2" '
		/^# phase module / { on = ($4 == l); next }
		/^# phase end / { on = 0; next }
		/^# phase / { if (on) ph = $3 "-" $4; next }
		!on { next }
		{ ty = $4; sub("type=", "", ty) }
		what == "lifecycle" && ty ~ /^(CTR|GET_REGION_SIZE|RESUME|PRESUSPEND|POSTSUSPEND|DTR)$/ {
			seq[ph] = seq[ph] " " ty }
		what == "ctr" && ty == "CTR" { c = $0; sub(/.* size=/, "size=", c); sub(/ pending=[01]/, "", c); print ph, c }
		what == "marks" && (ty == "MARK_REGION" || ty == "FLUSH") {
			for (i = 5; i <= NF; i++) if ($i ~ /^regions=./) {
				n = split(substr($i, 9), r, ","); for (j = 1; j <= n; j++) m[ph " " r[j]] = 1 } }
		END {
			if (what == "lifecycle") for (p in seq) print p ":" seq[p]
			if (what == "marks") for (k in m) print k
		}' "$TRACE" | sort
}
if [ "$have_c" = 1 ]; then
	for part in lifecycle ctr marks; do
		stream ours "$part" >"$WORK/ours.$part"
		stream c "$part" >"$WORK/c.$part"
		# (check's own local is called "what": this one must not be.)
		same() { [ -s "$WORK/ours.$part" ] && diff "$WORK/ours.$part" "$WORK/c.$part" >"$WORK/diff.$part"; }
		check "under cmirrord our module sends the C module's $part ($(wc -l <"$WORK/ours.$part") lines), phase by phase" same
		sed 's/^/# /' "$WORK/diff.$part" | head -n 20
	done
elif [ "${DMLU_REQUIRE_C_MODULE:-0}" = 1 ]; then
	# make check's stock series must compare: not running is a failure there.
	check "the C module's half ran (DMLU_REQUIRE_C_MODULE=1)" false
else
	note "no C module, or a DEBUG_ATOMIC_SLEEP kernel: the C module's half is not run here"
fi

ktap_finished
