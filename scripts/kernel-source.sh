#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Print the path of Debian's linux-source tarball for a kernel series,
# fetching it when it is not there. 6.12 is a plain package of Debian 12;
# newer series come from trixie-backports, downloaded with a private apt
# state so the machine's own sources are left alone.
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

# Not in the machine's sources: fetch from trixie-backports.
apt_dir="$CACHE/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$CACHE/debs"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie-backports main\n' \
	"$mirror" >"$apt_dir/sources.list"
apt_opts=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
	-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache::archives="$apt_dir/archives"
	-o APT::Get::List-Cleanup=0)
log "fetching linux-source-$series from trixie-backports"
apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || die "apt-get update (trixie-backports) failed"
(cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" download "linux-source-$series" >/dev/null 2>&1) \
	|| die "linux-source-$series not found in trixie-backports"
dpkg -x "$apt_dir"/archives/linux-source-"$series"_*.deb "$CACHE/debs"
[ -f "$fetched" ] || die "linux-source-$series package holds no $fetched"
printf '%s\n' "$fetched"
