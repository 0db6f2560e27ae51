#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build dm-log-userspace.ko against a kernel build directory, in a build
# directory of its own (so modules for several kernels do not mix), and
# print the path of the .ko. Fails on any compiler, clippy or objtool
# warning: the module must build clean.
#
# Usage: scripts/build-module.sh <kdir> <outdir> [CLIPPY=1]
. "$(dirname "$0")/lib.sh"

kdir=${1:?usage: build-module.sh <kdir> <outdir> [make args]}
out=${2:?usage: build-module.sh <kdir> <outdir> [make args]}
shift 2

# The kernel's own compiler: LLVM= as its .config says.
llvm=$("$TOP/scripts/kernel-llvm.sh" "$kdir")
mkdir -p "$out"
out=$(cd "$out" && pwd)
rsync -a --delete --exclude '*.o' --exclude '*.ko' --exclude '.*.cmd' \
	--exclude 'bindings_generated.rs' \
	"$TOP/Kbuild" "$TOP/VERSION" "$TOP/src" "$TOP/include" "$out/" 
# Rebuild from scratch when the sources changed: Kbuild tracks them, but a
# clean build also re-runs every lint.
make -s -C "$kdir" M="$out" LLVM="$llvm" clean >/dev/null 2>&1 || true
logf="$out/build.log"
if ! make -C "$kdir" M="$out" LLVM="$llvm" "$@" modules >"$logf" 2>&1; then
	cat "$logf" >&2
	die "module build failed"
fi
if grep -Eiq '(^|[^a-z_])(warning|error)(\[|:)' "$logf"; then
	grep -Ei -A8 '(^|[^a-z_])(warning|error)(\[|:)' "$logf" >&2
	die "module build printed warnings (see $logf)"
fi
printf '%s\n' "$out/dm-log-userspace.ko"
