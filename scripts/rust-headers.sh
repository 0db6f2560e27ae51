#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Make a distribution kernel's headers usable for out-of-tree Rust modules.
#
# Debian's linux-headers-* (like every distribution's, and like the kernel's
# own `make bindeb-pkg`) ship no Rust build products: no metadata of the
# `kernel` crate and its dependencies (rust/*.rmeta), no proc macros
# (rust/*.so), no scripts/target.json. This rebuilds them from the matching
# kernel source and the kernel's own .config, with exactly the C compiler,
# rustc and bindgen the kernel was built with, then checks that they are the
# kernel's: the configuration comes out of olddefconfig unchanged, and every
# Rust symbol the rebuilt crates export is one the kernel exports, by name,
# crate hash included (Module.symvers). Only then are they installed into
# the headers (with the kernel crate's sources, which Kbuild's API probes
# read); `--remove` takes them out again.
#
# Usage: scripts/rust-headers.sh [--source TARBALL|DIR] [--work DIR] [--check] [KDIR]
#        scripts/rust-headers.sh --remove [KDIR]
#   KDIR      the headers (default: /lib/modules/$(uname -r)/build)
#   --source  the kernel source; default /usr/src/linux-source-<series>.tar.xz
#             (Debian's linux-source-<series> package, of the same version)
#   --work    where to build (default: a temporary directory, removed after)
#   --check   rebuild and check, install nothing
# The toolchain comes from PATH (RUSTC=, BINDGEN= override). On Debian:
# apt-get install rustc rust-src bindgen gcc-<N> of the release the kernel
# was built on (for trixie-backports' kernels, trixie's), linux-source-<series>
# and the kernel's build dependencies (libclang-dev flex bison bc libelf-dev
# libssl-dev openssl dwarves python3: Kconfig probes some of them, and
# olddefconfig must give back the kernel's configuration).
set -euo pipefail

me=rust-headers.sh
log() { printf '[%s] %s\n' "$me" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$me" "$*" >&2; exit 1; }

source_arg="" work="" check=0 remove=0
while [ $# -gt 0 ]; do
	case "$1" in
	--source) source_arg=$2; shift ;;
	--work) work=$2; shift ;;
	--check) check=1 ;;
	--remove) remove=1 ;;
	-h|--help) sed -n '3,30p' "$0"; exit 0 ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) break ;;
	esac
	shift
done
kdir=${1:-/lib/modules/$(uname -r)/build}
[ -d "$kdir" ] || die "$kdir does not exist: install the kernel's headers (apt-get install linux-headers-$(uname -r))"
kdir=$(cd "$kdir" && pwd -P)
config="$kdir/.config"
[ -f "$config" ] || die "$kdir has no .config: not a kernel's headers"
manifest="$kdir/rust/.rust-headers-installed"

if [ "$remove" = 1 ]; then
	[ -f "$manifest" ] || { log "nothing installed in $kdir"; exit 0; }
	while IFS= read -r f; do rm -f "$kdir/$f"; done <"$manifest"
	rm -f "$manifest"
	find "$kdir/rust" -depth -type d -empty -delete 2>/dev/null || true
	log "removed the Rust build products from $kdir"
	exit 0
fi

conf() { sed -n "s/^CONFIG_$1=\"\\{0,1\\}\\([^\"]*\\)\"\\{0,1\\}\$/\\1/p" "$config"; }
[ "$(conf RUST)" = y ] || die "the kernel of $kdir was built without Rust (CONFIG_RUST): no Rust module can load into it"
release=$(cat "$kdir/include/config/kernel.release")

# The toolchain the kernel was built with, and ours.
want_rustc=$(conf RUSTC_VERSION_TEXT)
want_bindgen=$(conf BINDGEN_VERSION_TEXT)
want_cc=$(conf CC_VERSION_TEXT)
RUSTC=${RUSTC:-rustc}
BINDGEN=${BINDGEN:-bindgen}
have_rustc=$("$RUSTC" --version 2>/dev/null || true)
[ "$have_rustc" = "$want_rustc" ] || die "$release was built with $want_rustc but $RUSTC is ${have_rustc:-missing}: install that rustc (Debian: the rustc package of the release the kernel was built on)"
have_bindgen=$("$BINDGEN" --version 2>/dev/null || true)
[ -z "$want_bindgen" ] || [ "$have_bindgen" = "$want_bindgen" ] \
	|| die "$release was built with $want_bindgen but $BINDGEN is ${have_bindgen:-missing}: install that bindgen"
sysroot=$("$RUSTC" --print sysroot)
[ -d "$sysroot/lib/rustlib/src/rust/library/core" ] \
	|| die "$RUSTC has no library sources ($sysroot/lib/rustlib/src): install rust-src"
make_vars=(LLVM=)
if [ "$(conf CC_IS_CLANG)" = y ]; then
	major=$(($(conf CLANG_VERSION) / 10000))
	make_vars=(LLVM=-"$major")
	command -v "clang-$major" >/dev/null || die "$release was built with clang $major: install clang-$major lld-$major llvm-$major"
else
	# The compiler's name is the first word of its version line
	# ("x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0").
	cc=${want_cc%% *}
	have_cc=$("$cc" --version 2>/dev/null | head -n1 || true)
	[ "$have_cc" = "$want_cc" ] || die "$release was built with $want_cc but $cc is ${have_cc:-missing}: install that gcc"
	make_vars+=(CC="$cc" HOSTCC="$cc")
fi
make_vars+=(RUSTC="$RUSTC" BINDGEN="$BINDGEN" HOSTRUSTC="$RUSTC")

# The source of the same kernel version.
version=${release%%[+-]*}
series=$(echo "$version" | cut -d. -f1,2)
src_tar=${source_arg:-/usr/src/linux-source-$series.tar.xz}
[ -e "$src_tar" ] || die "no kernel source at $src_tar: apt-get install linux-source-$series (or pass --source)"

own_work=0
if [ -z "$work" ]; then
	work=$(mktemp -d "${TMPDIR:-/var/tmp}/rust-headers.XXXXXX")
	own_work=1
fi
[ "$own_work" = 0 ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
work=$(cd "$work" && pwd -P)
if [ -d "$src_tar" ]; then
	src=$(cd "$src_tar" && pwd -P)
else
	src="$work/src"
	if [ ! -f "$src/.extracted" ]; then
		log "extracting $src_tar"
		rm -rf "$src" && mkdir -p "$src"
		tar -xf "$src_tar" -C "$src" --strip-components=1
		touch "$src/.extracted"
	fi
fi
src_version=$(make -s -C "$src" kernelversion)
[ "$src_version" = "$version" ] || die "$src_tar is Linux $src_version but the kernel is $version: use the linux-source of the same version"

obj="$work/build"
mkdir -p "$obj"
kmake() { make -s -C "$src" O="$obj" "${make_vars[@]}" "$@"; }
cp "$config" "$obj/.config"
log "configuring $version with the kernel's .config"
kmake olddefconfig >"$work/olddefconfig.log" 2>&1 || { tail -n 20 "$work/olddefconfig.log" >&2; die "make olddefconfig failed"; }
if ! diff -q <(grep '^CONFIG_' "$config" | sort) <(grep '^CONFIG_' "$obj/.config" | sort) >/dev/null; then
	diff <(grep '^CONFIG_' "$config" | sort) <(grep '^CONFIG_' "$obj/.config" | sort) | head -n 20 >&2
	die "olddefconfig changed the kernel's configuration (lines above: < the kernel's, > ours): a different toolchain or source"
fi

log "building the Rust products of $release (make modules_prepare; a few minutes)"
start=$(date +%s)
if ! kmake -j"${JOBS:-$(($(nproc) + 1))}" modules_prepare >"$work/build.log" 2>&1; then
	tail -n 30 "$work/build.log" >&2
	die "make modules_prepare failed (full log: $work/build.log)"
fi
log "built in $(($(date +%s) - start)) s"
cmp -s "$kdir/include/generated/rustc_cfg" "$obj/include/generated/rustc_cfg" \
	|| die "the rebuilt include/generated/rustc_cfg differs from the kernel's"

# Every Rust symbol the rebuilt crates export must be exported by the
# kernel under the same name: the name holds the crate's hash, which
# depends on the rustc version, the crate's name and its flags.
ours="$work/exports.ours" theirs="$work/exports.kernel"
sed -n 's/^EXPORT_SYMBOL_RUST_GPL(\(.*\));$/\1/p' "$obj"/rust/exports_*_generated.h | grep '^_R' | sort -u >"$ours"
awk '$2 ~ /^_R/ {print $2}' "$kdir/Module.symvers" | sort -u >"$theirs"
n_ours=$(wc -l <"$ours")
n_theirs=$(wc -l <"$theirs")
missing=$(comm -23 "$ours" "$theirs" | wc -l)
[ "$n_ours" -gt 0 ] || die "the rebuilt crates export no Rust symbol: see $work/build.log"
if [ "$missing" -gt 0 ]; then
	log "crate hashes: ours vs the kernel's (from the symbol names):"
	for f in "$ours" "$theirs"; do
		grep -oE '^_RNvNtNtCs[0-9A-Za-z]+_4core' "$f" | sort -u | head -n1 >&2 || true
	done
	comm -23 "$ours" "$theirs" | head -n 5 >&2
	die "$missing of the $n_ours Rust symbols the rebuilt crates export are not exported by $release: not the kernel's toolchain or source"
fi
log "symbols: all $n_ours Rust symbols of the rebuilt crates are the kernel's ($n_theirs in its Module.symvers)"
[ "$check" = 0 ] || { log "--check: nothing installed"; exit 0; }

# Install: the crates' metadata and proc macros, the target description,
# and the sources Kbuild files of Rust modules read.
files=()
while IFS= read -r f; do files+=("$f"); done < <(
	cd "$obj" && find rust -maxdepth 1 \( -name '*.rmeta' -o -name '*.so' \) -type f
	cd "$obj" && [ -f scripts/target.json ] && echo scripts/target.json
	cd "$src" && find rust/Makefile rust/kernel rust/macros -type f -name '*.rs' -o -type f -name Makefile
)
for f in "${files[@]}"; do
	if [ -f "$obj/$f" ]; then from="$obj/$f"; else from="$src/$f"; fi
	install -D -m 644 "$from" "$kdir/$f"
done
printf '%s\n' "${files[@]}" >"$manifest"
log "installed ${#files[@]} files into $kdir (list: $manifest; undo: $me --remove $kdir)"
