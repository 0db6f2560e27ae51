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
# version; nothing for gcc. DKMS appends CC=clang LD=ld.lld for clang kernels, which would
# pick an unversioned clang: such VAR=value arguments are dropped, LLVM=
# sets both (scripts/kernel-llvm.sh reads it from the kernel's .config).
# Kbuild itself refuses, in one line, a kernel without Rust and a rustc or
# bindgen other than the kernel's. rustc and bindgen come from PATH, then
# from ~/.cargo/bin.
#
# Usage: dkms-make.sh build|clean <kernel build dir> [VAR=value...]
set -eu

action=${1:?usage: dkms-make.sh build|clean <kernel build dir>}
kdir=${2:?usage: dkms-make.sh build|clean <kernel build dir>}
die() { echo "dkms-make.sh: error: $*" >&2; exit 1; }

config="$kdir/.config"
[ -f "$config" ] || die "$kdir has no .config: not a kernel build tree"
[ -d "${HOME:-/root}/.cargo/bin" ] && PATH="$PATH:${HOME:-/root}/.cargo/bin"

llvm=$(sh "$(dirname "$0")/kernel-llvm.sh" "$kdir") || exit 1
llvm=${llvm:+LLVM=$llvm}

if [ "$action" = clean ]; then
	exec make -C "$kdir" M="$PWD" $llvm clean
fi
[ "$action" = build ] || die "unknown action '$action' (build or clean)"

exec make -C "$kdir" M="$PWD" $llvm modules
