#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make install` and `make uninstall` into a temporary DESTDIR, against a
# kernel build tree: the module lands in updates/ and modprobe prefers it to
# the in-tree C module, dm-ulogd runs, its unit starts the installed binary,
# its man page renders without a warning, PREFIX moves the server's files,
# and uninstall removes every file install put there (and re-indexes a
# module directory that holds other modules). Nothing outside the
# temporary directory is touched, except the build products of `make`.
#
# Usage: scripts/install-test.sh [kernel build dir]   (default: the debug test kernel)
. "$(dirname "$0")/lib.sh"

kbuild=${1:-$("$TOP/scripts/kernel.sh" debug)}
kbuild=$(cd "$kbuild" && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
krel=$(cat "$kbuild/include/config/kernel.release")
version=$(cat "$TOP/VERSION")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dmlu-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root="$tmp/root"
moddir="$root/lib/modules/$krel"
ok() { log "ok: $*"; }

# Called with the caller's variables on the command line (not from make's
# environment, which may carry a DESTDIR of its own).
mk() {
	env -u DESTDIR -u PREFIX -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
		make -s -C "$TOP" KDIR="$kbuild" "$@"
}

mk install DESTDIR="$root" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; die "make install failed"; }
files=$(cd "$root" && find . -type f -o -type l | sort)
want="./lib/modules/$krel/updates/dm-log-userspace.ko
./usr/local/lib/systemd/system/dm-ulogd.service
./usr/local/sbin/dm-ulogd
./usr/local/share/man/man8/dm-ulogd.8"
[ "$(grep -v '/modules\.[^/]*$' <<<"$files")" = "$want" ] \
	|| die "make install put: $files"
[ -f "$moddir/modules.dep" ] || die "make install ran no depmod"
ok "make install DESTDIR=...: module, dm-ulogd, unit, man page, depmod index"

[ "$(modinfo -F version "$moddir/updates/dm-log-userspace.ko")" = "$version" ] || die "modinfo version"
[ "$("$root/usr/local/sbin/dm-ulogd" --version)" = "dm-ulogd $version" ] || die "dm-ulogd --version"
grep -qx "ExecStart=/usr/local/sbin/dm-ulogd" "$root/usr/local/lib/systemd/system/dm-ulogd.service" \
	|| die "the unit does not start /usr/local/sbin/dm-ulogd"
ok "module and server are version $version; the unit starts the installed server"

if command -v man >/dev/null; then
	warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 \
		"$root/usr/local/share/man/man8/dm-ulogd.8" 2>&1 >/dev/null)
	[ -z "$warnings" ] || die "man page warnings: $warnings"
	LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$root/usr/local/share/man/man8/dm-ulogd.8" 2>/dev/null |
		grep -q "dm-ulogd $version" || die "man page does not render with the version"
	ok "man -l renders the man page without warnings"
fi

mk uninstall DESTDIR="$root" >"$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log" >&2; die "make uninstall failed"; }
left=$(cd "$root" && find . -type f -o -type l)
[ -z "$left" ] || die "make uninstall left: $left"
[ ! -e "$moddir" ] || die "make uninstall left $moddir"
ok "make uninstall removes every file, and the module directory it created"

# Next to a kernel's own modules: modprobe (as run by dm-log.c's
# request_module) picks ours; uninstall leaves the kernel's and re-indexes.
intree="$kbuild/drivers/md/dm-log-userspace.ko"
if [ -f "$intree" ]; then
	install -D -m 644 "$intree" "$moddir/kernel/drivers/md/dm-log-userspace.ko"
	cp "$kbuild/modules.order" "$kbuild/modules.builtin" "$moddir/" 2>/dev/null || true
	mk install DESTDIR="$root" PREFIX=/opt/dmlu >"$tmp/install2.log" 2>&1 \
		|| { cat "$tmp/install2.log" >&2; die "make install PREFIX=/opt/dmlu failed"; }
	resolved=$(modprobe -d "$root" -S "$krel" --show-depends dm-log-userspace | tail -n1)
	[ "${resolved% }" = "insmod $moddir/updates/dm-log-userspace.ko" ] \
		|| die "modprobe dm-log-userspace resolves to '$resolved'"
	grep -qx "ExecStart=/opt/dmlu/sbin/dm-ulogd" "$root/opt/dmlu/lib/systemd/system/dm-ulogd.service" \
		|| die "PREFIX=/opt/dmlu: the unit does not start /opt/dmlu/sbin/dm-ulogd"
	[ -f "$root/opt/dmlu/share/man/man8/dm-ulogd.8" ] || die "PREFIX=/opt/dmlu: no man page"
	ok "modprobe dm-log-userspace picks updates/ over the in-tree module; PREFIX=/opt/dmlu"

	mk uninstall DESTDIR="$root" PREFIX=/opt/dmlu >"$tmp/uninstall2.log" 2>&1 \
		|| { cat "$tmp/uninstall2.log" >&2; die "make uninstall PREFIX=/opt/dmlu failed"; }
	[ -z "$(find "$root/opt" -type f)" ] || die "make uninstall left files under /opt/dmlu"
	[ -f "$moddir/kernel/drivers/md/dm-log-userspace.ko" ] || die "make uninstall removed the kernel's module"
	resolved=$(modprobe -d "$root" -S "$krel" --show-depends dm-log-userspace | tail -n1)
	[ "${resolved% }" = "insmod $moddir/kernel/drivers/md/dm-log-userspace.ko" ] \
		|| die "after uninstall modprobe resolves to '$resolved'"
	ok "make uninstall keeps the kernel's modules and re-indexes them"
fi
log "install test passed"
