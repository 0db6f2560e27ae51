#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Print the LLVM= setting a module must be built with for a kernel build
# tree, read from its .config: nothing for a gcc-built kernel, -<major> for
# a kernel built by clang <major> when clang-<major> is installed (Debian's
# versioned packages), 1 when plain `clang` is that version. A module must
# be compiled by its kernel's compiler. POSIX sh: DKMS runs it too.
#
# Usage: scripts/kernel-llvm.sh <kernel build dir>
set -eu
kdir=${1:?usage: kernel-llvm.sh <kernel build dir>}
config="$kdir/.config"
die() { echo "kernel-llvm.sh: error: $*" >&2; exit 1; }
[ -f "$config" ] || die "$kdir has no .config: not a kernel build tree"
grep -q '^CONFIG_CC_IS_CLANG=y' "$config" || exit 0
version=$(sed -n 's/^CONFIG_CLANG_VERSION=//p' "$config")
major=$((version / 10000))
if command -v "clang-$major" >/dev/null 2>&1; then
	echo "-$major"
elif clang --version 2>/dev/null | grep -q "clang version $major\."; then
	echo 1
else
	die "the kernel in $kdir was built with clang $major: install clang-$major, lld-$major and llvm-$major"
fi
