#!/usr/bin/env bash
# Builds dist/apnsd_<version>_<arch>.deb from this repository: static binaries
# (-trimpath), gzipped man pages, the units and configuration, packed by nfpm
# run from the Go module proxy (it does not become a dependency in go.mod).
#
# Usage: packaging/build-deb.sh
# Environment: VERSION (default: defaults.Version in the source), GOARCH
# (default: go env GOARCH), DEB_MAINTAINER, NFPM (the nfpm command).
# Prints the path of the .deb on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(sed -n 's/^var Version = "\(.*\)"$/\1/p' internal/defaults/defaults.go)}
if [[ ! $VERSION =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
	echo "build-deb: version '$VERSION' is not a Debian version (set VERSION)" >&2
	exit 1
fi
GOARCH=${GOARCH:-$(go env GOARCH)}
DEB_MAINTAINER=${DEB_MAINTAINER:-apnsd maintainers <maintainers@apnsd.invalid>}
NFPM=${NFPM:-go run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2}
export VERSION GOARCH DEB_MAINTAINER

build=dist/build
rm -rf "$build"
mkdir -p "$build/man"

echo "build-deb: building apnsd $VERSION for linux/$GOARCH" >&2
ldflags="-s -w -X github.com/apnsd/apnsd/internal/defaults.Version=$VERSION"
CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH go build -trimpath -ldflags "$ldflags" -o "$build/" ./cmd/apnsd ./cmd/apnsctl
if [ "$GOARCH" = "$(go env GOHOSTARCH)" ]; then
	got=$("$build/apnsd" -version)
	[ "$got" = "apnsd $VERSION" ] || { echo "build-deb: apnsd -version says '$got'" >&2; exit 1; }
fi

for page in packaging/man/*.8; do
	sed "s/@VERSION@/$VERSION/g" "$page" | gzip -9n >"$build/man/$(basename "$page").gz"
done

# Every Go module compiled into the binaries needs its own Files: paragraph
# in packaging/copyright (their licenses require the notices to ship);
# apnsd's "Files: *" does not count.
mapfile -t patterns < <(awk '/^Files:/{f=1; sub(/^Files:[ \t]*/, ""); print; next}
	f && /^[ \t]/{sub(/^[ \t]+/, ""); print; next} {f=0}' packaging/copyright | grep -vx '\*')
missing=()
for bin in "$build/apnsd" "$build/apnsctl"; do
	for mod in $(go version -m "$bin" | awk '$1 == "dep" {print $2}'); do
		found=no
		for pat in "${patterns[@]}"; do
			# shellcheck disable=SC2053 # $pat is a glob on purpose
			if [[ $mod/x == $pat ]]; then found=yes; break; fi
		done
		[ $found = yes ] || missing+=("$mod")
	done
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "build-deb: packaging/copyright has no Files: paragraph for: $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')" >&2
	exit 1
fi
if grep -q 'LicenseRef-apnsd-no-license-yet' packaging/copyright; then
	echo "build-deb: WARNING: apnsd has no license yet (placeholder in packaging/copyright)" >&2
fi

# The changelog: packaging/changelog, plus a generated entry on top when it
# has none for $VERSION (a snapshot build). Dated by the last commit, so that
# rebuilding the same commit gives the same file.
when=$(git log -1 --format=%ct 2>/dev/null || date +%s)
top=$(sed -n '1s/^apnsd (\([^)]*\)).*/\1/p' packaging/changelog)
{
	if [ "$top" != "$VERSION" ]; then
		commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
		printf 'apnsd (%s) UNRELEASED; urgency=medium\n\n' "$VERSION"
		printf '  * Snapshot build of commit %s (the last release is %s).\n\n' "$commit" "$top"
		printf ' -- %s  %s\n\n' "$DEB_MAINTAINER" "$(LC_ALL=C date -u -R -d "@$when")"
	fi
	cat packaging/changelog
} | gzip -9n >"$build/changelog.gz"

deb="dist/apnsd_${VERSION}_${GOARCH}.deb"
rm -f "$deb"
$NFPM pkg --packager deb --config packaging/nfpm.yaml --target "$deb" >&2
dpkg-deb --info "$deb" >/dev/null
echo "$deb"
