#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Print the kernel build directory `make` builds against by default: the
# running kernel's, when it was built with Rust; else the cached debug test
# kernel (built on first use by scripts/kernel.sh).
. "$(dirname "$0")/lib.sh"

running=/lib/modules/$(uname -r)/build
if [ -f "$running/.config" ] && grep -q '^CONFIG_RUST=y' "$running/.config"; then
	printf '%s\n' "$running"
else
	"$TOP/scripts/kernel.sh" debug
fi
