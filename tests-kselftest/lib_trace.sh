#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Helpers for the tests that check the request stream ulog-test-server saw
# (its --trace file, one request a line: t= seq= luid= type= size= pending=
# [ctr=] [regions=] [fault=]). Source after lib.sh.

# `check "..." fails cmd args`: passes when the command fails.
fails() { ! "$@"; }

# log_has PATTERN: the kernel log since mark_log matches PATTERN (ERE).
log_has() { log_since_mark | grep -Eq -- "$1"; }

# trace_of LUID: the trace lines of one log.
trace_of() { awk -v l="luid=$1" '$3 == l' "$TRACE"; }

# count_type LUID TYPE: how many requests of TYPE the log sent.
count_type() { trace_of "$1" | grep -c " type=$2 " || true; }

# field LINE NAME: the value of NAME=... in a trace line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# luids_of_ctr PATTERN: luids of every CTR whose string matches, in order.
luids_of_ctr() {
	grep " type=CTR " "$TRACE" | grep -- "$1" | awk '{sub("luid=", "", $3); print $3}'
}

# wait_trace LUID TYPE SECONDS [REGION]: wait until the log sent a request
# of TYPE (carrying REGION); prints its time (ms).
wait_trace() {
	local i line
	for i in $(seq "$(($3 * 10))"); do
		line=$(trace_of "$1" | grep " type=$2 " |
			grep -E "${4:+regions=([0-9]+,)*$4(,|\$| )}" | head -n1)
		[ -n "$line" ] && { field "$line" t; return 0; }
		sleep 0.1
	done
	return 1
}

# region_counts LUID TYPE: the number of regions of each request of TYPE.
region_counts() {
	trace_of "$1" | awk -v ty="type=$2" '$4 == ty {
		n = 0; for (i = 5; i <= NF; i++) if ($i ~ /^regions=./) n = split(substr($i, 9), _, ",")
		printf "%d ", n }'
}

# line_of LUID TYPE: trace line number of the first request of TYPE.
line_of() { grep -n " luid=$1 type=$2 " "$TRACE" | head -n1 | cut -d: -f1; }

# dump_traces_if_failed LUID...: after a failed check, the logs' traces (as
# KTAP comments) to see what the server saw.
dump_traces_if_failed() {
	local luid
	[ "${KTAP_CNT_FAIL:-0}" = 0 ] && return 0
	for luid in "$@"; do
		trace_of "$luid" | head -n 300 | sed 's/^/# trace: /'
	done
}
