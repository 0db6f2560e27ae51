#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# DKMS end to end against a kernel build tree, leaving nothing behind:
# `make dkms` stages the sources under a temporary root, and dkms add,
# build, install and remove run with their source, DKMS and module trees
# inside that root (--sourcetree, --dkmstree, --installtree) and the kernel
# named by --kernelsourcedir, so /usr/src, /var/lib/dkms and /lib/modules
# are never touched. Checks that the module built is ours, for that kernel,
# installed under updates/dkms where modprobe prefers it to the in-tree C
# module; that a kernel without Rust is skipped, not failed; that remove
# takes the module away.
#
# Usage: scripts/dkms-test.sh [kernel build dir]   (default: the debug test kernel)
. "$(dirname "$0")/lib.sh"

command -v dkms >/dev/null || die "dkms not found (scripts/deps.sh installs it)"
kbuild=${1:-$("$TOP/scripts/kernel.sh" debug)}
kbuild=$(cd "$kbuild" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
krel=$(cat "$kbuild/include/config/kernel.release")
version=$(cat "$TOP/VERSION")
mv="dm-log-userspace/$version"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dmlu-dkms.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"
mkdir -p "$root/var/lib/dkms"
trees=(--sourcetree "$root/usr/src" --dkmstree "$root/var/lib/dkms" --installtree "$root/lib/modules")
# DKMS signs modules when it finds a sign-file program, creating a key in
# /var/lib/dkms first; this kernel does not check signatures.
export sign_file=/nonexistent

fail() {
	local f
	for f in "$root"/var/lib/dkms/dm-log-userspace/"$version"/{build/make.log,"$krel"/*/log/make.log}; do
		[ -f "$f" ] && tail -n 30 "$f" >&2
	done
	die "$*"
}
ok() { log "ok: $*"; }

DESTDIR="$root" "$TOP/scripts/install.sh" dkms 2>/dev/null
ok "make dkms DESTDIR=... staged $(find "$root/usr/src" -type f | wc -l) files"

dkms add "$mv" "${trees[@]}" >"$tmp/add.log" 2>&1 || { cat "$tmp/add.log" >&2; fail "dkms add"; }
ok "dkms add"

start=$(date +%s)
dkms build "$mv" -k "$krel" --kernelsourcedir "$kbuild" "${trees[@]}" >"$tmp/build.log" 2>&1 \
	|| { cat "$tmp/build.log" >&2; fail "dkms build"; }
ok "dkms build for $krel ($(($(date +%s) - start)) s)"

# The module directory as the kernel's modules_install leaves it, with the
# in-tree C module if the kernel has it: DKMS's version check must let ours
# in beside it.
mkdir -p "$root/lib/modules/$krel"
for f in modules.order modules.builtin modules.builtin.modinfo; do
	[ -f "$kbuild/$f" ] && cp "$kbuild/$f" "$root/lib/modules/$krel/"
done
intree="$kbuild/drivers/md/dm-log-userspace.ko"
if [ -f "$intree" ]; then
	install -D -m 644 "$intree" "$root/lib/modules/$krel/kernel/drivers/md/dm-log-userspace.ko"
else
	intree=""
fi
dkms install "$mv" -k "$krel" --kernelsourcedir "$kbuild" --no-depmod "${trees[@]}" \
	>"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "dkms install"; }
ko="$root/lib/modules/$krel/updates/dkms/dm-log-userspace.ko"
[ -f "$ko" ] || fail "dkms install put no module at $ko"
[ -z "$intree" ] || [ -f "$root/lib/modules/$krel/kernel/drivers/md/dm-log-userspace.ko" ] \
	|| fail "dkms install moved the in-tree module away"
dkms status "$mv" "${trees[@]}" 2>/dev/null | grep -q "$krel.*installed" || fail "dkms status: not installed"
ok "dkms install: $ko"

info=$(modinfo "$ko")
field() { sed -n "s/^$1: *//p" <<<"$info"; }
[ "$(field version)" = "$version" ] || fail "modinfo version '$(field version)', want $version"
[ "$(field name)" = dm_log_userspace ] || fail "modinfo name '$(field name)'"
case "$(field vermagic)" in "$krel "*) ;; *) fail "vermagic '$(field vermagic)' is not for $krel" ;; esac
ok "modinfo: dm_log_userspace $version, vermagic $krel"
# Compiled by the kernel's own compiler (DKMS's CC=clang was dropped).
cc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$kbuild/.config")
readelf -p .comment "$ko" | grep -qF "$cc" || fail "$ko was not compiled by $cc"
ok "compiled by the kernel's compiler: $cc"

# Next to the in-tree C module, modprobe (which dm-log.c's request_module
# runs) resolves dm-log-userspace to ours.
depmod -b "$root" "$krel"
resolved=$(modprobe -d "$root" -S "$krel" --show-depends dm-log-userspace | tail -n1)
[ "$resolved" = "insmod $ko " ] || [ "$resolved" = "insmod $ko" ] \
	|| fail "modprobe dm-log-userspace resolves to '$resolved'"
ok "modprobe dm-log-userspace picks updates/dkms${intree:+ over the in-tree module}"

# A kernel without Rust: skipped (exit 77), not a failure.
norust="$tmp/norust"
mkdir -p "$norust/include"
grep -v '^CONFIG_RUST=' "$kbuild/.config" >"$norust/.config"
rc=0
dkms build "$mv" -k "$krel-norust" --kernelsourcedir "$norust" "${trees[@]}" >"$tmp/norust.log" 2>&1 || rc=$?
[ "$rc" = 77 ] || { cat "$tmp/norust.log" >&2; fail "dkms build for a kernel without Rust exited $rc, want 77"; }
ok "a kernel without CONFIG_RUST is skipped (BUILD_EXCLUSIVE_CONFIG)"

dkms remove "$mv" --all --no-depmod "${trees[@]}" >"$tmp/remove.log" 2>&1 \
	|| { cat "$tmp/remove.log" >&2; fail "dkms remove"; }
[ ! -e "$ko" ] || fail "dkms remove left $ko"
[ -z "$(dkms status "$mv" "${trees[@]}" 2>/dev/null)" ] || fail "dkms status still lists $mv"
ok "dkms remove --all"
log "DKMS test passed"
