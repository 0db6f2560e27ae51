#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Print the path of Debian's linux-source tarball for a kernel series,
# fetching it when it is not there. A series the machine's own apt sources
# have (6.12 on Debian 12) is installed with apt-get; any other comes from
# the newest of trixie, trixie-backports, sid and experimental that has it,
# downloaded with a private apt state (lib.sh: debian_apt) so the machine's
# sources are left alone.
#
# Usage: scripts/kernel-source.sh <series>
. "$(dirname "$0")/lib.sh"

series=${1:?usage: kernel-source.sh <series>}
tarball=/usr/src/linux-source-$series.tar.xz
if [ -f "$tarball" ]; then
	printf '%s\n' "$tarball"
	exit 0
fi

fetched="$CACHE/debs/usr/src/linux-source-$series.tar.xz"
if [ -f "$fetched" ]; then
	printf '%s\n' "$fetched"
	exit 0
fi

if [ "$series" = "$KERNEL_SERIES" ] || apt-cache show "linux-source-$series" >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || die "linux-source-$series is not installed and we are not root"
	log "installing linux-source-$series"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"linux-source-$series" >/dev/null 2>&1 \
		|| die "apt-get install linux-source-$series failed"
	printf '%s\n' "$tarball"
	exit 0
fi

log "fetching linux-source-$series (Debian: $DEBIAN_SUITES)"
exec 8>"$CACHE/.kernel-source-$series.lock"
flock 8
if [ ! -f "$fetched" ]; then
	deb=$(debian_download "linux-source-$series") \
		|| die "linux-source-$series is in none of the Debian suites $DEBIAN_SUITES"
	dpkg -x "$deb" "$CACHE/debs"
fi
[ -f "$fetched" ] || die "the linux-source-$series package holds no $fetched"
printf '%s\n' "$fetched"
