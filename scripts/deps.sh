#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything the build, the tests and the demo need, on Debian 12 as
# root. Skips what is already there; names what is missing when it cannot
# install it. Usage: scripts/deps.sh [extra apt packages...]
. "$(dirname "$0")/lib.sh"

APT_PKGS=(
	# kernel and module build
	make gcc libc6-dev flex bison bc libelf-dev libssl-dev cpio kmod xz-utils
	rsync python3 "clang${LLVM_SUFFIX}" "lld${LLVM_SUFFIX}" "llvm${LLVM_SUFFIX}"
	"libclang${LLVM_SUFFIX}-dev" "linux-source-${KERNEL_SERIES}"
	# the guest: emulator and the programs the tests run inside it
	qemu-system-x86 busybox-static dmsetup fio bash
	# Debian's stock kernels: a chroot with their toolchain (scripts/stock-kernel.sh)
	debootstrap
	# documentation lint
	python3-docutils
	# the packaging tests (scripts/dkms-test.sh)
	dkms
	# the chart of `make bench` (scripts/bench-report.py)
	gnuplot-nox
	# LVM2's cmirrord, built from Debian's lvm2 source (scripts/cmirrord.sh),
	# and the single-node corosync it runs on in the guest
	dpkg-dev pkg-config libaio-dev libblkid-dev libcpg-dev libcorosync-common-dev corosync
	"$@"
)
# dm-ulogd's `cluster` feature and the two-node cluster test: libcpg and
# corosync (only with DMLU_CLUSTER=1: the package starts a corosync).
if [ "${DMLU_CLUSTER:-0}" = 1 ]; then
	APT_PKGS+=(libcpg-dev libcmap-dev libquorum-dev libvotequorum-dev libcfg-dev corosync)
fi

missing_pkgs() {
	local p
	for p in "${APT_PKGS[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
			|| printf '%s\n' "$p"
	done
}

mapfile -t missing < <(missing_pkgs)
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root or install them"
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || die "apt-get update failed"
	# linux-source-6.12 comes from bookworm-security: a stale list hides it.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || true
	mapfile -t still < <(missing_pkgs)
	[ ${#still[@]} -eq 0 ] || die "could not install: ${still[*]} (check the apt sources)"
fi

command -v rustup >/dev/null || die "rustup not found: the machine's Rust toolchain is required"
command -v cargo >/dev/null || die "cargo not found"
sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/src/rust/library/core" ]; then
	log "adding the rust-src component"
	rustup component add rust-src >/dev/null 2>&1 || die "rustup component add rust-src failed"
fi
for comp in clippy rustfmt; do
	rustup component list --installed 2>/dev/null | grep -q "^$comp" \
		|| rustup component add "$comp" >/dev/null 2>&1 || die "rustup component add $comp failed"
done

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v bindgen >/dev/null; then
	log "installing bindgen-cli (cargo install, a few minutes)"
	cargo install --locked bindgen-cli >/dev/null 2>&1 || die "cargo install --locked bindgen-cli failed"
fi
log "all prerequisites present"
