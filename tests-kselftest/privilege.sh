#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Who may answer the kernel: a reply counts only if its sender has
# CAP_SYS_ADMIN as netlink_capable() decides it, the check netlink code has
# made since CVE-2014-0181. The sending task must have it, and so must the
# task that opened the sending socket, unless the sender named the kernel as
# the destination (a program tricked into writing on someone else's socket
# writes with write(2), which names none).
#
# Each case serves a mirror's CTR with one ulog-test-server:
# - opened by uid 65534, written by root with write(2): ignored;
# - opened by root, written by uid 65534 with write(2): ignored;
# - opened and written by root with write(2): answered;
# - opened by uid 65534, written by root with sendmsg(2) to the kernel's
#   address: answered.
# An ignored CTR is resent after 15 s, then answered by a privileged server.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_trace.sh"
require_env dmsetup losetup ulog-test-server

ktap_print_header
ktap_set_plan 6
trap cleanup_all EXIT

load_module
make_legs 2 16
S=32768
n=0

# serve [options]: start a ulog-test-server and wait until it listens (a
# loaded guest can take more than start_test_server's 5 s).
serve() {
	start_test_server "$@"
	wait_for_file "$WORK/ts.ready" 60
}

# create_in_background: load a fresh mirror; touches $WORK/created once the
# load completes.
create_in_background() {
	n=$((n + 1))
	rm -f "$WORK/created"
	( dmsetup create dmlu-pv --table \
		"$(mirror_table $S "dmlu-pv-$n clustered-core 1024 nosync")" \
		&& touch "$WORK/created" ) &
	CREATOR=$!
}

# finish: wait for the load (answered by a privileged server if it was not),
# then remove the mirror.
finish() {
	if [ ! -e "$WORK/created" ]; then
		stop_test_server
		serve --write
	fi
	wait "$CREATOR"
	stop_test_server
	dmsetup remove dmlu-pv 2>/dev/null
	rm -f "$WORK/created"
}

refusal_logged() { log_has "without CAP_SYS_ADMIN"; }
# The reply was ignored: logged, and the load still waits.
ignored() { eventually 30 refusal_logged && [ ! -e "$WORK/created" ]; }
# The reply was taken: the load completed, nothing was ignored.
answered() { wait_for_file "$WORK/created" 60 && ! refusal_logged; }

# refused WHAT [server options]: the server's replies are ignored; a
# privileged server then answers the resent CTR.
refused() {
	local what=$1
	shift
	mark_log
	serve "$@"
	create_in_background
	check "$what: ignored" ignored
	stop_test_server
	serve --write
	check "... the load completes once a privileged server answers" \
		wait_for_file "$WORK/created" 60
	finish
}

# accepted WHAT [server options]: the server's reply is taken.
accepted() {
	local what=$1
	shift
	mark_log
	serve "$@"
	create_in_background
	check "$what: answered" answered
	finish
}

refused "socket opened by uid 65534, written by root with write(2)" --open-as 65534 --write
refused "socket opened by root, written by uid 65534 with write(2)" --user 65534 --write
accepted "socket opened and written by root with write(2)" --write
accepted "socket opened by uid 65534, written by root with sendmsg(2) to the kernel" \
	--open-as 65534

ktap_finished
