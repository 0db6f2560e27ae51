#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the userspace programs in tools/ as static binaries (they run in the
# test guest, which has no libraries) and print the directory holding them.
. "$(dirname "$0")/lib.sh"

target=x86_64-unknown-linux-gnu
export PATH="$HOME/.cargo/bin:$PATH"
cd "$TOP/tools"
RUSTFLAGS="-C target-feature=+crt-static" \
	cargo build --quiet --release --locked --target "$target" --bins >&2 \
	|| die "cargo build of tools/ failed"
printf '%s\n' "$TOP/tools/target/$target/release"
