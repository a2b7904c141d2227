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

deb="dist/apnsd_${VERSION}_${GOARCH}.deb"
rm -f "$deb"
$NFPM pkg --packager deb --config packaging/nfpm.yaml --target "$deb" >&2
dpkg-deb --info "$deb" >/dev/null
echo "$deb"
