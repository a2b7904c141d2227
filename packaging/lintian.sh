#!/usr/bin/env bash
# Runs lintian on the apnsd .deb and fails on any error or warning. The few
# tags that do not apply to apnsd are overridden in packaging/lintian-overrides
# (shipped as /usr/share/lintian/overrides/apnsd), each with its reason;
# info, pedantic and overridden tags are shown but do not fail.
# Needs the Debian package lintian.
#
# Usage: packaging/lintian.sh [dist/apnsd_VERSION_ARCH.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

deb=${1:-$(ls -t dist/apnsd_*.deb 2>/dev/null | head -n1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "lintian: no .deb (run packaging/build-deb.sh first)" >&2; exit 1; }
command -v lintian >/dev/null || { echo "lintian: lintian is missing (apt-get install lintian)" >&2; exit 1; }

echo "== lintian $deb"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# The verdict comes from the tags printed, not from --fail-on: with
# --show-overrides, lintian 2.116 also fails on overridden errors.
rc=0
lintian --fail-on none --display-info --pedantic --show-overrides \
	--tag-display-limit 0 "$deb" >"$out" 2>&1 || rc=$?
grep -v '^running with root privileges is not recommended!$' "$out" || true
if [ $rc -ne 0 ]; then
	echo "lintian: FAILED: lintian itself exited $rc" >&2
	exit 1
fi
if grep -q '^[EW]: ' "$out"; then
	echo "lintian: FAILED: fix the errors (E:) and warnings (W:) above, or override a tag that does not apply in packaging/lintian-overrides, with its reason" >&2
	exit 1
fi
echo "lintian: clean (no errors or warnings)"
