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

# apt-get over a private apt state under $CACHE/apt that knows the Debian
# suites the machine's own sources may lack (newer kernel sources, Debian's
# stock kernels, the toolchains they were built with). The machine's sources
# and lists are left alone. Lists are refreshed once a day.
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SUITES=${DEBIAN_SUITES:-trixie trixie-backports sid experimental}
debian_apt() {
	local dir="$CACHE/apt" s
	mkdir -p "$dir/lists/partial" "$dir/archives/partial"
	for s in $DEBIAN_SUITES; do
		printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
			"$DEBIAN_MIRROR" "$s"
	done >"$dir/sources.list.new"
	local opts=(-o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
		-o Dir::State::Lists="$dir/lists" -o Dir::Cache::archives="$dir/archives"
		-o Dir::State::status=/dev/null -o APT::Get::List-Cleanup=0)
	(
		flock 7
		if ! cmp -s "$dir/sources.list.new" "$dir/sources.list" ||
			[ -z "$(find "$dir/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null)" ]; then
			mv "$dir/sources.list.new" "$dir/sources.list"
			apt-get "${opts[@]}" update -qq >"$dir/update.log" 2>&1 \
				|| die "apt-get update of the Debian suites ($DEBIAN_SUITES) failed; see $dir/update.log"
		fi
	) 7>"$dir/.lock" || exit 1
	apt-get "${opts[@]}" "$@"
}
# apt-cache over the same state.
debian_apt_cache() {
	local dir="$CACHE/apt"
	apt-cache -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=/dev/null \
		-o Dir::State::Lists="$dir/lists" -o Dir::State::status=/dev/null "$@"
}
# Download the named Debian packages (apt-get download, the newest version
# unless name=version) into $CACHE/debs and print their paths.
debian_download() {
	local dir="$CACHE/debs" p
	mkdir -p "$dir"
	(cd "$dir" && debian_apt download "$@" >"$dir/download.log" 2>&1) \
		|| die "apt-get download $* failed (see $dir/download.log)"
	for p in "$@"; do
		p=${p%%=*}
		ls -t "$dir/${p}"_*.deb | head -n1
	done
}

# Run a command quietly, showing its log tail if it fails.
quiet() {
	local logf=$1; shift
	if ! "$@" >"$logf" 2>&1; then
		tail -n 40 "$logf" >&2
		die "failed: $* (full log: $logf)"
	fi
}
