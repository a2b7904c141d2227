#!/usr/bin/env bash
# The whole test suite: Go (with the race detector), the Python and PHP
# clients against the real daemon, and short fuzz runs. Exits non-zero on
# any failure. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi

echo "== build"
mkdir -p bin
go build -trimpath -o bin/ ./cmd/...
export APNSD_BIN="$PWD/bin/apnsd"

echo "== go test -race"
go test -race -count=1 -timeout 600s ./...

for suite in clients/python/run-tests.sh clients/php/run-tests.sh; do
  if [ -x "$suite" ]; then
    echo "== $suite"
    "$suite"
  fi
done
echo "== short fuzz runs"
for f in FuzzDecodeRequest FuzzCleanToken FuzzFraming; do
  go test -run '^$' -fuzz "^$f\$" -fuzztime 10s ./internal/ipc/ >/dev/null
done

if [ "$(id -u)" -eq 0 ] && [ "${SKIP_DEB:-}" != 1 ]; then
  echo "== .deb: build, install, check, purge"
  deb=$(packaging/build-deb.sh)
  packaging/test-deb.sh "$deb"
else
  echo "== .deb: skipped (needs root; CI runs it)"
fi
echo "== all tests passed"
