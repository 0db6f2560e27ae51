# SPDX-License-Identifier: GPL-2.0
#
# dm-log-userspace: the out-of-tree Rust module, its userspace tools, and
# their tests. `make help` lists the targets.

# The kernel to build against: the running one if it has Rust, else the
# cached test kernel (built on first use).
KDIR ?= $(shell scripts/default-kdir.sh)
# The module must be built with the compiler of its kernel: read from the
# kernel's .config (empty for gcc, -<version> or 1 for clang).
LLVM ?= $(shell scripts/kernel-llvm.sh $(KDIR))

.PHONY: all module clippy tools check check-reach stress demo bench clean help
.PHONY: install uninstall dkms dkms-uninstall htmldocs cluster-check fuzz-compare
.PHONY: rust-headers deb deb-check mutants

all: module

module:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) modules

clippy:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) CLIPPY=1 modules

tools:
	cd tools && cargo build --release --locked

# Everything: prerequisites, debug kernels (6.12 and 7.3), Debian's stock
# 7.3, lint gates, host unit tests and the kselftests in QEMU on each kernel.
# DMLU_TESTS=a.sh,b.sh runs only those kselftests, DMLU_SERIES=6.12 only
# that kernel.
check:
	scripts/check.sh

# The series in between, outside make check's budget: a gcc-built 7.2
# kernel, and the module built warning-free (clippy) against it.
check-reach:
	DMLU_SERIES= DMLU_STOCK_SERIES= DMLU_BUILD_SERIES=7.2 scripts/check.sh

# The long form of the stress kselftests on the 6.12 debug kernel (hours).
stress:
	scripts/stress.sh

# Mutation testing: the faults of scripts/mutants/list, each run against
# the cheapest tests that should catch it (cargo on the host, kselftests in
# one QEMU boot of the 6.12 debug kernel); a table of mutant, killer and
# time in out/mutants. Fails below 90% killed.
mutants:
	scripts/deps.sh
	scripts/mutants.sh

# The product end to end in QEMU on the perf kernel: a mirror with a
# userspace log served by dm-ulogd, written, resynced, shown, removed.
demo:
	scripts/deps.sh
	scripts/guest.sh --flavour perf --run /usr/libexec/dmlu/demo.sh --out out/demo

# Our module against the in-tree C module, the core and disk logs and
# dm-linear, in one QEMU boot of the perf kernel (about 20 minutes under
# TCG; DMLU_BENCH_QUICK=1 for a short run). Tables and chart in out/bench.
bench:
	scripts/deps.sh
	scripts/bench.sh

# Our module and the in-tree C module through the same hostile-reply
# fuzzing, each in a boot of the debug kernel: KASAN reports, failed writes,
# legs that lost acknowledged writes (table in out/fuzz-compare/figures.md).
fuzz-compare:
	scripts/deps.sh
	scripts/fuzz-compare.sh

# Clustered mirrors on QEMU guests sharing a disk, over corosync: dm-ulogd
# --cluster on two and three nodes (partitions, merges, power cuts), LVM2's
# cmirrord on two nodes under our module, and a mixed pair (our module and
# the in-tree C module, both on cmirrord). See scripts/cluster.sh.
cluster-check:
	scripts/cluster.sh

# A distribution kernel's headers ship no Rust metadata of the kernel crate:
# rebuild it from the kernel's source and .config with the kernel's own
# rustc and bindgen, check it against the kernel's symbols, and install it
# into KDIR (root). See scripts/rust-headers.sh --help.
rust-headers:
	scripts/rust-headers.sh $(RUST_HEADERS_FLAGS) $(KDIR)

# The Debian packages dm-log-userspace-dkms and dm-ulogd (debian/), built
# in place with dpkg-buildpackage, on Debian 13 or later (first
# `apt-get build-dep ./` for debhelper, dh-dkms, cargo and the librust-*-dev
# crates of debian/control).
deb:
	dpkg-buildpackage -us -uc -b

# The packages end to end on Debian's own 7.3 kernel in QEMU: built in a
# trixie chroot, installed with apt (DKMS builds the module in the guest),
# a mirror served by dm-ulogd, purged (scripts/deb-test.sh; long under TCG).
deb-check:
	scripts/deps.sh
	scripts/deb-test.sh

# Install the module to /lib/modules/<release of KDIR>/updates (ahead of the
# in-tree C module), dm-ulogd, its systemd unit and man page; see
# scripts/install.sh. DESTDIR stages; PREFIX (/usr/local), SBINDIR, MANDIR
# and UNITDIR place the server's files. uninstall removes what install put.
install: module tools
	KDIR='$(KDIR)' LLVM='$(LLVM)' scripts/install.sh install

uninstall:
	KDIR='$(KDIR)' LLVM='$(LLVM)' scripts/install.sh uninstall

# The module's sources as /usr/src/dm-log-userspace-<version> for DKMS,
# registered, and built for the running kernel if it has Rust.
dkms:
	scripts/install.sh dkms

dkms-uninstall:
	scripts/install.sh dkms-uninstall

# Documentation/ as HTML in out/htmldocs (needs Debian's python3-sphinx).
htmldocs:
	@command -v sphinx-build >/dev/null || { echo 'sphinx-build not found: apt-get install python3-sphinx' >&2; exit 1; }
	sphinx-build -q -W -b html Documentation out/htmldocs

clean:
	-$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) clean
	rm -rf src/bindings_generated.rs out
	cd tools && cargo clean

help:
	@echo 'make             build dm-log-userspace.ko against KDIR'
	@echo '                 (default: the running kernel if Rust-enabled, else the test kernel)'
	@echo 'make clippy      the same, linted by clippy'
	@echo 'make tools       build the userspace programs in tools/'
	@echo 'make check       install prerequisites, lint, unit tests, kselftests in QEMU'
	@echo '                 on 6.12 and 7.3 (DMLU_SERIES=6.12, DMLU_TESTS=a.sh,b.sh: fewer)'
	@echo 'make stress      the long form of the stress kselftests (DMLU_STRESS_TESTS=)'
	@echo 'make mutants     mutation testing: hand-written faults against their killer'
	@echo '                 tests, a table in out/mutants (DMLU_MUTANTS=a,b: only those)'
	@echo 'make demo        a userspace-log mirror end to end in QEMU'
	@echo 'make bench       our module vs the C module and the kernel logs, in QEMU:'
	@echo '                 out/bench/bench.md, .json, .png (DMLU_BENCH_QUICK=1: short run)'
	@echo 'make fuzz-compare  our module and the C module under the same reply fuzzing:'
	@echo '                 KASAN reports, failed writes, lost acknowledged writes'
	@echo 'make cluster-check  clustered mirrors on QEMU guests over corosync: dm-ulogd'
	@echo '                 on 2 and 3 nodes, cmirrord pairs (ours, ours+C); out/cluster'
	@echo 'make rust-headers  make a distribution kernel'"'"'s headers (KDIR) usable for'
	@echo '                 Rust modules: rebuild and check the kernel crate'"'"'s metadata'
	@echo 'make deb         the Debian packages (dpkg-buildpackage; on Debian 13+)'
	@echo 'make deb-check   the packages installed, used and purged on Debian'"'"'s own'
	@echo '                 7.3 kernel in QEMU (out/deb-7.3)'
	@echo 'make install     install the module (for KDIR), dm-ulogd, its unit and man page'
	@echo '                 (DESTDIR=, PREFIX=/usr/local); make uninstall removes them'
	@echo 'make dkms        module sources to /usr/src for DKMS; make dkms-uninstall'
	@echo 'make htmldocs    Documentation/ as HTML in out/htmldocs (needs python3-sphinx)'
	@echo 'make clean       remove build products (the cached kernels stay in ~/.cache)'
