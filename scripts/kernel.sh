#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (or reuse) a Rust-enabled test kernel from Debian's linux-source and
# print its build directory. The build lives under ~/.cache, keyed by kernel
# version, flavour, the contents of the config fragments and the versions of
# the toolchain (C compiler, rustc, bindgen, libclang), so a second run with
# the same inputs costs nothing and a new toolchain builds anew.
#
# The debug flavour is built with clang (LLVM=$LLVM_SUFFIX): Rust with KASAN
# needs a clang-built kernel. The perf flavour is built with gcc, as
# distributions build their kernels, so the tests cover both compilers.
#
# Usage: scripts/kernel.sh <debug|perf> [series]     (series: 6.12 by default)
#        scripts/kernel.sh stock [series]     Debian's own kernel of the series
#                                             (scripts/stock-kernel.sh; none built)
#        scripts/kernel.sh source [series]    only extract the source; print its tree
. "$(dirname "$0")/lib.sh"

flavour=${1:?usage: kernel.sh <debug|perf|stock|source> [series]}
series=${2:-$KERNEL_SERIES}
[ "$flavour" = stock ] && exec "$TOP/scripts/stock-kernel.sh" dir "$series"
[ "$flavour" = source ] || [ -f "$TOP/scripts/kconfig/$flavour.config" ] \
	|| die "unknown flavour '$flavour' (have: debug, perf, stock, source)"

case "$flavour" in
debug) llvm=$LLVM_SUFFIX ;;
*) llvm="" ;;
esac

# Bump when the recipe below changes in a way the fragments do not show.
RECIPE=1

tarball=$("$TOP/scripts/kernel-source.sh" "$series")
src_key=$(stat -c '%s-%Y' "$tarball")
src="$CACHE/src/linux-source-$series-$src_key"
mkdir -p "$CACHE/src"
exec 8>"$src.lock"
flock 8
if [ ! -f "$src/.extracted" ]; then
	log "extracting $tarball"
	rm -rf "$src" && mkdir -p "$src"
	tar -xf "$tarball" -C "$src" --strip-components=1
	touch "$src/.extracted"
fi
exec 8>&-
version=$(make -s -C "$src" kernelversion 2>/dev/null)
if [ "$flavour" = source ]; then
	printf '%s\n' "$src"
	exit 0
fi

# The fragments for this series: base.config and <flavour>.config with the
# lines of scripts/kconfig/series.conf that apply to it (renamed options,
# per-series additions). Unchanged for a series no line applies to.
series_from() { # whether $series is $1 or later
	[ "$(printf '%s\n%s\n' "$1" "$series" | sort -V | head -n1)" = "$1" ]
}
fragdir=$(mktemp -d)
trap 'rm -rf "$fragdir"' EXIT
frags=("$fragdir/base.config" "$fragdir/$flavour.config")
cp "$TOP/scripts/kconfig/base.config" "${frags[0]}"
cp "$TOP/scripts/kconfig/$flavour.config" "${frags[1]}"
while read -r first what rest; do
	case "$first" in ''|\#*) continue ;; esac
	series_from "$first" || continue
	case "$what" in
	rename) sed -i -E "s/\bCONFIG_${rest%% *}\b/CONFIG_${rest#* }/" "${frags[@]}" ;;
	"$flavour") printf '%s\n' "$rest" >>"${frags[1]}" ;;
	esac
done <"$TOP/scripts/kconfig/series.conf"

if [ -n "$llvm" ]; then
	cc_version=$("clang$llvm" --version | head -n1)
else
	cc_version=$(gcc --version | head -n1)
fi
export PATH="$HOME/.cargo/bin:$PATH"
toolchain=("cc=$cc_version" "rustc=$(rustc --version)" "bindgen=$(bindgen --version)"
	"libclang=$("clang$LLVM_SUFFIX" --version | head -n1)")
key=$(content_hash "${frags[@]}" "llvm=$llvm" "${toolchain[@]}" "recipe=$RECIPE")
build="$CACHE/build/$version-$flavour-$key"
mkdir -p "$build"
exec 9>"$build/.lock"
flock 9

if [ -f "$build/.done" ]; then
	printf '%s\n' "$build"
	exit 0
fi

kmake() { make -C "$src" O="$build" LLVM="$llvm" "$@"; }

log "configuring $version ($flavour, ${llvm:+clang}${llvm:-gcc}) in $build"
printf '%s\n' "${toolchain[@]}" >"$build/toolchain"
quiet "$build/config.log" kmake tinyconfig
quiet "$build/merge.log" "$src/scripts/kconfig/merge_config.sh" -m -O "$build" \
	"$build/.config" "${frags[@]}"
quiet "$build/olddefconfig.log" kmake olddefconfig

# Every option asked for must have survived olddefconfig (RUST silently goes
# away when a dependency is missing, for instance).
bad=()
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*)
		grep -qxF "$line" "$build/.config" || bad+=("$line") ;;
	"# CONFIG_"*" is not set")
		opt=${line#\# }; opt=${opt%% *}
		grep -qE "^$opt=(y|m)$" "$build/.config" && bad+=("$line") ;;
	esac
done < <(cat "${frags[@]}")
[ ${#bad[@]} -eq 0 ] || die "config options lost by olddefconfig: ${bad[*]}"

log "building $version ($flavour) with -j$JOBS; log: $build/build.log"
start=$(date +%s)
quiet "$build/build.log" kmake -j"$JOBS" bzImage modules
log "built in $(($(date +%s) - start)) s"

touch "$build/.done"
printf '%s\n' "$build"
