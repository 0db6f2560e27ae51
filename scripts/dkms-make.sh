#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The build and clean commands of dkms.conf: build dm-log-userspace.ko in
# the current directory (DKMS's copy of the sources) against a kernel build
# tree, with that kernel's compiler and Rust toolchain.
#
# A module must be compiled by its kernel's compiler. For a clang-built
# kernel (CONFIG_CC_IS_CLANG=y) this passes LLVM=-<major> when clang-<major>
# exists (Debian's clang-19 packages), else LLVM=1 if `clang` is that
# version. DKMS appends CC=clang LD=ld.lld for clang kernels, which would
# pick an unversioned clang: such VAR=value arguments are dropped, LLVM=
# sets both. Rust code links against the kernel's `kernel` crate, which only
# the very rustc that built the kernel can read: a different one is refused
# here with a clear message. rustc and bindgen come from PATH, then from
# ~/.cargo/bin.
#
# Usage: dkms-make.sh build|clean <kernel build dir> [VAR=value...]
set -eu

action=${1:?usage: dkms-make.sh build|clean <kernel build dir>}
kdir=${2:?usage: dkms-make.sh build|clean <kernel build dir>}
die() { echo "dkms-make.sh: error: $*" >&2; exit 1; }

config="$kdir/.config"
[ -f "$config" ] || die "$kdir has no .config: not a kernel build tree"
[ -d "${HOME:-/root}/.cargo/bin" ] && PATH="$PATH:${HOME:-/root}/.cargo/bin"

llvm=""
if grep -q '^CONFIG_CC_IS_CLANG=y' "$config"; then
	version=$(sed -n 's/^CONFIG_CLANG_VERSION=//p' "$config")
	major=$((version / 10000))
	if command -v "clang-$major" >/dev/null; then
		llvm="LLVM=-$major"
	elif clang --version 2>/dev/null | grep -q "clang version $major\."; then
		llvm="LLVM=1"
	else
		die "the kernel was built with clang $major: install clang-$major, lld-$major and llvm-$major"
	fi
fi

if [ "$action" = clean ]; then
	exec make -C "$kdir" M="$PWD" $llvm clean
fi
[ "$action" = build ] || die "unknown action '$action' (build or clean)"

grep -q '^CONFIG_RUST=y' "$config" || die "the kernel has no Rust support (CONFIG_RUST)"
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$config")
have=$(rustc --version 2>/dev/null) || die "rustc not found (PATH or ~/.cargo/bin); the kernel needs: $want"
if [ -n "$want" ] && [ "$have" != "$want" ]; then
	die "the kernel was built with $want but PATH has $have: Rust modules need the same rustc"
fi
command -v bindgen >/dev/null || die "bindgen not found (cargo install --locked bindgen-cli)"

exec make -C "$kdir" M="$PWD" $llvm modules
