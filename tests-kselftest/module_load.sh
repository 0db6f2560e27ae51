#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The module loads with insmod, registers its connector callback and its log
# type, says what it is, unloads, and reloads without leaving anything behind.
# Installed for modprobe, it is loaded on demand by dm-log.c (which asks for
# "dm-log-<type>") when a table names the userspace log.

. "$(dirname "$0")/lib.sh"
require_env insmod rmmod modinfo

ktap_print_header
ktap_set_plan 11

unload_module
leaks_reset
mark_log
check "insmod succeeds" insmod "$DMLU_MODULE"
check "module listed in /proc/modules" module_loaded
check "connector callback dmlogusr registered for 7:1" \
	grep -Eq '^dmlogusr +7:1$' /proc/net/connector
check "load message gives the version and protocol 3" \
	bash -c "dmesg | grep -Eq 'dm_log_userspace: version [0-9.]+ loaded \(request protocol version 3\)'"
info=$(modinfo "$DMLU_MODULE")
check "modinfo gives description, license, version and alias" bash -c '
	grep -q "^description: *device-mapper userspace dirty log" <<<"$1" &&
	grep -q "^license: *GPL" <<<"$1" && grep -q "^version: *[0-9]" <<<"$1" &&
	grep -q "^alias: *dm-log-userspace" <<<"$1"' _ "$info"
check "rmmod succeeds" rmmod dm_log_userspace
check "callback and module gone after unload" \
	bash -c '! grep -q dmlogusr /proc/net/connector && ! grep -q "^dm_log_userspace " /proc/modules'

reload_ok=true
for _ in $(seq 10); do
	insmod "$DMLU_MODULE" && rmmod dm_log_userspace || { reload_ok=false; break; }
done
check "10 load/unload cycles" $reload_ok
leak_check "no memory leaked (kmemleak)"

# On-demand loading: the module in /lib/modules/<release>/extra, modprobe
# and depmod (kmod) in place. No server listens, so the table fails to load
# (the CTR finds no server), but the module was loaded for it.
# (kmod's own, not busybox's applets: the kernel runs /sbin/modprobe.)
trap 'cleanup_all; rm -rf "$EXTRA"; /sbin/depmod -a 2>/dev/null' EXIT
EXTRA=/lib/modules/$(uname -r)/extra
kmod=$(command -v kmod)
mkdir -p "$EXTRA" /sbin
cp "$DMLU_MODULE" "$EXTRA/"
ln -sf "$kmod" /sbin/modprobe
ln -sf "$kmod" /sbin/depmod
/sbin/depmod -a 2>/dev/null
check "modprobe finds it by its alias" \
	bash -c '/sbin/modprobe -n -v dm-log-userspace 2>&1 | grep -q extra/dm-log-userspace.ko'
make_legs 2 4
dmsetup create dmlu-autoload --table \
	"0 8192 mirror userspace 4 dmlu-autoload clustered-core 1024 nosync 2 ${LEGS[0]} 0 ${LEGS[1]} 0 0" 2>/dev/null
check "a table with a userspace log loads the module on demand" module_loaded

ktap_finished
