# SPDX-License-Identifier: GPL-2.0
# Shared settings for the scripts in this directory. Source it; do not run it.

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DMLU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm-log-userspace}

# The toolchain every kernel and module here is built with. Rust with KASAN
# needs a clang-built kernel, and a module must use its kernel's compiler.
LLVM_SUFFIX=${LLVM_SUFFIX:--19}
JOBS=${JOBS:-$(($(nproc) + 1))}

# Kernel series we know how to fetch: Debian's linux-source-<series>.
KERNEL_SERIES=${KERNEL_SERIES:-6.12}

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# Hash of files and strings, for cache keys.
content_hash() {
	{ for f in "$@"; do
		if [ -f "$f" ]; then cat "$f"; else printf '%s\n' "$f"; fi
	done; } | sha256sum | cut -c1-12
}

# Run a command quietly, showing its log tail if it fails.
quiet() {
	local logf=$1; shift
	if ! "$@" >"$logf" 2>&1; then
		tail -n 40 "$logf" >&2
		die "failed: $* (full log: $logf)"
	fi
}
