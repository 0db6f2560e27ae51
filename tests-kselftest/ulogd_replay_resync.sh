#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# When the server answers ESRCH (it lost a log: restarted without its state,
# as cmirrord always does), the module replays CTR and RESUME. The rebuilt
# log may be less in sync than the kernel last saw (a core log starts with
# no region in sync); the mirror must then resync and write to both legs,
# without waiting for the next dm resume.
#
# The module forgets its in-sync hint after a replay (the C module keeps it,
# so a mirror that was in sync never asks GET_RESYNC_WORK again until it is
# resumed, and writes to the regions the server calls out of sync reach the
# primary leg only). The mirror asks for resync work when its thread next
# runs: the first write after the replay wakes it.

DIR=$(dirname "$0")
. "$DIR/lib.sh"
. "$DIR/lib_ulogd.sh"
require_env dmsetup losetup dm-ulogd

ktap_print_header
ktap_set_plan 5
trap ulogd_cleanup EXIT

NAME=dmlu-replay
SECTORS=65536 # 32 MiB: 64 regions of 1024 sectors

load_module
start_ulogd
make_legs 2 32
dd if=/dev/urandom of="${LEGS[0]}" bs=1M count=32 oflag=direct status=none
dmsetup create $NAME --table "$(mirror_table $SECTORS "dmlu-replay-1 clustered-core 1024 sync")"
check "clustered-core mirror in sync, legs identical" eval "wait_sync $NAME 120 && legs_identical"

# The server restarts without its state.
kill_ulogd
rm -rf "$ULOGD_STATE/logs"
start_ulogd
n=$(in_sync_of $NAME)
check "the kernel replayed the constructor: a second CTR reached the server" \
	test "$(grep -c "log 'dmlu-replay-1' .*created" "$ULOGD_LOG")" = 2
check "the rebuilt core log starts out of sync ($n/64)" test "$n" -lt 64
dd if=/dev/urandom of=/dev/mapper/$NAME bs=1M count=4 oflag=direct status=none
check "a write wakes the mirror, which resyncs without a resume: 64/64 within 60 s" \
	wait_sync $NAME 60
check "the write reached both legs: legs identical" legs_identical

ktap_finished
