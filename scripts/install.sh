#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install or remove the product: dm-log-userspace.ko for the kernel in KDIR
# (under updates/, so modprobe and dm's autoload prefer it to the in-tree C
# module), dm-ulogd, its systemd unit and its man page; or stage the module
# sources for DKMS and register them. `make install`, `make uninstall`,
# `make dkms` and `make dkms-uninstall` run this after building what it
# installs; it builds nothing itself.
#
# Usage: scripts/install.sh install|uninstall|dkms|dkms-uninstall
#
# Environment (the Makefile passes them; defaults in brackets):
#   KDIR       kernel build tree the module was built against (install, uninstall)
#   LLVM       the LLVM= setting the module was built with [KDIR's, from its .config]
#   DESTDIR    staging root, prepended to every path []
#   PREFIX     [/usr/local]; SBINDIR [$PREFIX/sbin]; MANDIR [$PREFIX/share/man];
#   UNITDIR    [$PREFIX/lib/systemd/system]
#   INSTALL_MOD_STRIP  passed to the kernel's modules_install (1: strip debug info)
. "$(dirname "$0")/lib.sh"

action=${1:?usage: install.sh install|uninstall|dkms|dkms-uninstall}
NAME=dm-log-userspace
VERSION=$(cat "$TOP/VERSION")
DESTDIR=${DESTDIR:-}
# Kbuild runs modules_install from KDIR: a relative DESTDIR would land there.
[ -n "$DESTDIR" ] && DESTDIR=$(realpath -m "$DESTDIR")
PREFIX=${PREFIX:-/usr/local}
SBINDIR=${SBINDIR:-$PREFIX/sbin}
MANDIR=${MANDIR:-$PREFIX/share/man}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}

server="$DESTDIR$SBINDIR/dm-ulogd"
unit="$DESTDIR$UNITDIR/dm-ulogd.service"
manpage="$DESTDIR$MANDIR/man8/dm-ulogd.8"
dkms_src="$DESTDIR/usr/src/$NAME-$VERSION"

# The kernel release of KDIR and the module directory for it.
module_dir() {
	[ -n "${KDIR:-}" ] || die "KDIR is not set (run this through make)"
	local rel="$KDIR/include/config/kernel.release"
	[ -f "$rel" ] || die "$KDIR is not a configured kernel build tree (no $rel)"
	KREL=$(cat "$rel")
	MODDIR="$DESTDIR/lib/modules/$KREL"
	[ -n "${LLVM+set}" ] || LLVM=$("$TOP/scripts/kernel-llvm.sh" "$KDIR")
}

# depmod for KREL. A staging DESTDIR lacks the kernel's modules.order and
# modules.builtin*, which depmod warns about: those warnings are dropped.
run_depmod() {
	depmod -a ${DESTDIR:+-b "$DESTDIR"} "$KREL" 2>&1 |
		{ grep -v 'could not open modules\.\(order\|builtin\)' || true; } >&2
}

# The files depmod writes: what a module directory holds when it holds no
# module of its own (the kernel's modules.order and modules.builtin* are
# not in this list, so a directory that has them is never removed).
DEPMOD_FILES=" modules.alias modules.alias.bin modules.builtin.alias.bin modules.builtin.bin
modules.dep modules.dep.bin modules.devname modules.softdep modules.symbols modules.symbols.bin
modules.weakdep "

do_install() {
	module_dir
	local ko="$TOP/dm-log-userspace.ko" bin="$TOP/tools/target/release/dm-ulogd"
	[ -f "$ko" ] || die "$ko not built (run: make KDIR=$KDIR)"
	[ -x "$bin" ] || die "$bin not built (run: make tools)"
	[ -f "$TOP/modules.order" ] || die "$TOP/modules.order missing: rebuild the module"

	# The kernel's own install: signs the module when the kernel signs its
	# own (CONFIG_MODULE_SIG_ALL), compresses it as the kernel's, strips it
	# with INSTALL_MOD_STRIP. Its depmod is skipped (DEPMOD=true): it needs
	# System.map, which header packages lack; ours follows.
	DEPMOD=true make -s -C "$KDIR" M="$TOP" LLVM="$LLVM" INSTALL_MOD_PATH="$DESTDIR" \
		INSTALL_MOD_DIR=updates ${INSTALL_MOD_STRIP:+INSTALL_MOD_STRIP="$INSTALL_MOD_STRIP"} \
		modules_install >/dev/null
	run_depmod

	install -D -m 755 "$bin" "$server"
	tmp=$(mktemp)
	trap 'rm -f "$tmp"' EXIT
	sed "s|/usr/sbin/dm-ulogd|$SBINDIR/dm-ulogd|g" "$TOP/tools/dm-ulogd/dm-ulogd.service" >"$tmp"
	install -D -m 644 "$tmp" "$unit"
	sed "s|^\(\.TH DM-ULOGD 8 \"[^\"]*\"\) \"dm-ulogd [^\"]*\"|\1 \"dm-ulogd $VERSION\"|" \
		"$TOP/Documentation/dm-ulogd.8" >"$tmp"
	install -D -m 644 "$tmp" "$manpage"

	log "installed:"
	find "$MODDIR/updates" -maxdepth 1 -name 'dm-log-userspace.ko*' >&2
	printf '%s\n' "$server" "$unit" "$manpage" >&2
	if [ -z "$DESTDIR" ]; then
		log "next: systemctl daemon-reload && systemctl enable --now dm-ulogd"
		log "(the module loads on first use of a 'userspace' log, or: modprobe dm-log-userspace)"
	fi
}

do_uninstall() {
	module_dir
	if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null &&
		{ systemctl -q is-enabled dm-ulogd.service 2>/dev/null ||
			systemctl -q is-active dm-ulogd.service 2>/dev/null; }; then
		die "dm-ulogd.service is enabled or running: systemctl disable --now dm-ulogd first"
	fi
	local f
	for f in "$MODDIR"/updates/dm-log-userspace.ko{,.gz,.xz,.zst} "$server" "$unit" "$manpage"; do
		[ -e "$f" ] || continue
		rm -f "$f"
		log "removed $f"
	done
	[ -d "$MODDIR" ] || return 0
	[ -d "$MODDIR/updates" ] && rmdir --ignore-fail-on-non-empty "$MODDIR/updates"
	# If install created the module directory (a kernel whose modules are
	# not installed here), remove it with depmod's files; else re-index.
	local only_depmod=true e
	for e in "$MODDIR"/* "$MODDIR"/.[!.]*; do
		[ -e "$e" ] || [ -L "$e" ] || continue
		case "$DEPMOD_FILES" in *[[:space:]]"${e##*/}"[[:space:]]*) ;; *) only_depmod=false ;; esac
	done
	if $only_depmod; then
		for f in $DEPMOD_FILES; do rm -f "$MODDIR/$f"; done
		rmdir "$MODDIR"
		log "removed $MODDIR (it held nothing else)"
	else
		run_depmod
	fi
}

# The files a module build needs, nothing else (no build products).
dkms_files() {
	local f
	printf '%s\n' dkms.conf Kbuild VERSION scripts/dkms-make.sh scripts/kernel-llvm.sh src/helpers.c \
		include/dm_log_userspace_bindings.h include/uapi/linux/dm-log-userspace.h
	for f in "$TOP"/src/*.rs; do
		[ "${f##*/}" = bindings_generated.rs ] || printf 'src/%s\n' "${f##*/}"
	done
}

dkms_registered() {
	[ -z "$DESTDIR" ] && command -v dkms >/dev/null &&
		dkms status -m "$NAME" -v "$VERSION" 2>/dev/null | grep -q .
}

do_dkms() {
	local conf_version
	conf_version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
	[ "$conf_version" = "$VERSION" ] \
		|| die "dkms.conf says PACKAGE_VERSION=\"$conf_version\" but VERSION is $VERSION"
	local kernels=()
	if [ -z "$DESTDIR" ]; then
		command -v dkms >/dev/null || die "dkms not found (apt-get install dkms)"
		# Same version, new sources: drop what was built from the old ones,
		# and build anew for the kernels it was installed for.
		if dkms_registered; then
			mapfile -t kernels < <(dkms status -m "$NAME" -v "$VERSION" |
				sed -n 's/^[^,]*, \([^,]*\), [^:]*: installed.*/\1/p')
			log "removing the registered $NAME/$VERSION first"
			dkms remove "$NAME/$VERSION" --all >/dev/null
		fi
	fi
	rm -rf "$dkms_src"
	local f
	while IFS= read -r f; do
		install -D -m "$([ "${f%.sh}" != "$f" ] && echo 755 || echo 644)" "$TOP/$f" "$dkms_src/$f"
	done < <(dkms_files)
	log "module sources staged in $dkms_src"
	[ -z "$DESTDIR" ] || return 0

	dkms add "$NAME/$VERSION"
	local running k
	running=$(uname -r)
	if grep -qs '^CONFIG_RUST=y' "/lib/modules/$running/build/.config"; then
		kernels+=("$running")
	fi
	if [ ${#kernels[@]} -eq 0 ]; then
		log "the running kernel has no Rust (or no headers): nothing built now."
		log "build for a Rust-enabled kernel with: dkms install $NAME/$VERSION -k <kernel release>"
	fi
	for k in $(printf '%s\n' "${kernels[@]}" | sort -u); do
		dkms install "$NAME/$VERSION" -k "$k"
	done
}

do_dkms_uninstall() {
	if dkms_registered; then
		dkms remove "$NAME/$VERSION" --all
	fi
	if [ -d "$dkms_src" ]; then
		rm -rf "$dkms_src"
		log "removed $dkms_src"
	fi
}

case "$action" in
install) do_install ;;
uninstall) do_uninstall ;;
dkms) do_dkms ;;
dkms-uninstall) do_dkms_uninstall ;;
*) die "unknown action '$action' (install, uninstall, dkms, dkms-uninstall)" ;;
esac
