#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The lint gates of `make check`: the module builds without a warning under
# clippy (with the C helpers under the kernel's own flags), Rust is
# rustfmt-clean, `unsafe` appears only in the abstraction files, the uapi
# header is the kernel's byte for byte, the tools pass clippy and rustfmt,
# the documentation is valid reStructuredText, and make install/uninstall
# and DKMS work (scripts/install-test.sh, scripts/dkms-test.sh; 10-30 s).
#
# The module gates (clippy build, uapi header) run against every kernel
# given; the others once.
#
# Usage: scripts/lint.sh <kernel build dir> [out dir] [more kernel build dirs...]
. "$(dirname "$0")/lib.sh"

kbuild=${1:?usage: lint.sh <kernel build dir> [out dir] [more kernel build dirs...]}
out=${2:-$TOP/out/lint}
out=${out:-$TOP/out/lint}
kbuilds=("$kbuild" "${@:3}")
export PATH="$HOME/.cargo/bin:$PATH"

for kb in "${kbuilds[@]}"; do
	release=$(cat "$kb/include/config/kernel.release")
	log "module: clippy build against $release"
	ko=$("$TOP/scripts/build-module.sh" "$kb" "$out/module-clippy-$release" CLIPPY=1 DMLU_KUNIT=1)
	# Where the kernel has Rust KUnit, the test build carries the suites
	# and the default build (what users install) none of them.
	if grep -q '^CONFIG_KUNIT=y' "$kb/.config" && grep -qs '^pub fn kunit_tests' "$(readlink -f "$kb/source")/rust/macros/lib.rs"; then
		log "module: KUnit suites only in the test build ($release)"
		# (The symbols are read whole first: with pipefail, grep -q ending
		# early would kill nm with SIGPIPE and fail the pipeline.)
		syms=$(nm "$ko")
		grep -q 'KUNIT_TEST_SUITE' <<<"$syms" || die "the DMLU_KUNIT=1 build against $release has no KUnit suite"
		ko=$("$TOP/scripts/build-module.sh" "$kb" "$out/module-default-$release")
		syms=$(nm "$ko")
		! grep -qi 'kunit' <<<"$syms" || die "the default build against $release contains KUnit code"
	fi
	# The kselftests' config fragment states what the debug kernels have.
	if grep -qx 'CONFIG_KASAN=y' "$kb/.config"; then
		log "tests-kselftest/config holds in $release's debug .config"
		missing=$(grep -E '^CONFIG_' "$TOP/tests-kselftest/config" | grep -vxF -f "$kb/.config" || true)
		[ -z "$missing" ] || die "tests-kselftest/config asks for what the $release debug kernel lacks: $(paste -sd' ' <<<"$missing")"
	fi
	log "uapi header identical to $release's"
	cmp "$TOP/include/uapi/linux/dm-log-userspace.h" \
		"$(readlink -f "$kb/source")/include/uapi/linux/dm-log-userspace.h" \
		|| die "include/uapi/linux/dm-log-userspace.h differs from $release's"
done

log "module: rustfmt"
rustfmt --check --edition 2021 --config-path "$TOP/.rustfmt.toml" "$TOP/src/dm_log_userspace.rs" \
	|| die "src/ is not rustfmt-clean (run: rustfmt --edition 2021 src/dm_log_userspace.rs)"

log "mutants: every fault of scripts/mutants/list still applies"
python3 "$TOP/scripts/mutants/mutants.py" check "$TOP/scripts/mutants/list" "$TOP" \
	|| die "a mutant of scripts/mutants/list no longer applies: update its text to the code"

log "module: unsafe only in the abstraction layer"
"$TOP/scripts/check-unsafe.sh"

log "tools: clippy and rustfmt"
(cd "$TOP/tools" && cargo fmt --check) || die "tools/ is not rustfmt-clean (run: cd tools && cargo fmt)"
(cd "$TOP/tools" && cargo clippy --quiet --locked --all-targets -- -D warnings) \
	|| die "clippy found problems in tools/"

if compgen -G "$TOP/Documentation/*.rst" >/dev/null; then
	log "Documentation: reStructuredText"
	for f in "$TOP"/Documentation/*.rst; do
		python3 -m docutils --halt=warning --report=warning "$f" >/dev/null \
			|| die "$f is not valid reStructuredText"
	done
fi
log "packaging: make install/uninstall, DKMS (into temporary directories)"
quiet "$out/install-test.log" "$TOP/scripts/install-test.sh" "$kbuild"
quiet "$out/dkms-test.log" "$TOP/scripts/dkms-test.sh" "$kbuild"
log "lint: all clean"
