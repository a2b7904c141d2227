#!/usr/bin/env bash
# The whole test suite: vet, gofmt, staticcheck, Go (with the race detector), the Python and PHP
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
echo "== go vet on other systems (Linux-only code is in _linux.go files)"
GOOS=darwin go build ./...
GOOS=freebsd go vet ./...

# staticcheck and golangci-lint, pinned; go run fetches them through the
# module proxy once and leaves go.mod alone. Every package is linted.
staticcheck_version=v0.8.2
golangci_version=v2.7.2
lint_pkgs=$(go list ./...)
echo "== staticcheck $staticcheck_version"
go run honnef.co/go/tools/cmd/staticcheck@$staticcheck_version $lint_pkgs
# A few more rules (.golangci.yml says which and why); the same packages.
echo "== golangci-lint $golangci_version"
go run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$golangci_version run \
  $(go list -f '{{.Dir}}' $lint_pkgs)

echo "== apnsctl speaks only the socket protocol (does not link internal/apns)"
if go list -deps ./cmd/apnsctl | grep -q '/internal/apns'; then
  echo "cmd/apnsctl links internal/apns:"; go list -deps ./cmd/apnsctl | grep '/internal/apns'; exit 1
fi

echo "== docs/design.md's package map is the code's (scripts/layers.sh)"
if ! sh scripts/layers.sh | diff -u - <(sed -n '/^```$/,/^```$/{/^```$/d;p;}' docs/design.md | sed -n '/^cmd\/apnsbench:/,/^internal\/spool:/p'); then
  echo "docs/design.md's package map differs from the imports (- is the code): update it from scripts/layers.sh"; exit 1
fi

echo "== build"
mkdir -p bin
go build -trimpath -o bin/ ./cmd/...
export APNSD_BIN="$PWD/bin/apnsd"

echo "== go test -race"
go test -race -count=1 -timeout 600s ./...
echo "== internal/sockio without -race (a race build uses syscall.Read/Write, so the raw calls are tested here; the daemon tests run them too, through bin/apnsd)"
go test -count=1 ./internal/sockio

for suite in clients/python/run-tests.sh clients/php/run-tests.sh; do
  if [ -x "$suite" ]; then
    echo "== $suite"
    "$suite"
  fi
done
echo "== short fuzz runs"
# A failing input is saved under <package>/testdata/fuzz/<target>/ and
# fails the run. A fuzzing run that dies for another reason (a worker that
# stalls on a loaded 2-core machine) is retried once, with its output shown.
fuzzlog=$(mktemp)
# package:target[:fuzztime, 10s if not given]; FuzzDecodeRequest runs a
# line through ipc's decoding and the daemon's NewNotification, so it lives
# in internal/daemon. The FuzzNameChecks (hand-written name checks against
# the regexps they replaced) get 5s: small languages, and exhaustive tests
# besides.
for pf in internal/daemon:FuzzDecodeRequest internal/ipc:FuzzCleanToken internal/ipc:FuzzFraming internal/ipc:FuzzFastDecode internal/ipc:FuzzFastEncode internal/config:FuzzNameChecks:5s internal/apns:FuzzNameChecks:5s; do
  pkg=${pf%%:*} f=${pf#*:} fuzztime=10s
  if [ "${f#*:}" != "$f" ]; then fuzztime=${f#*:} f=${f%%:*}; fi
  for try in 1 2; do
    before=$(ls $pkg/testdata/fuzz/$f 2>/dev/null | wc -l || true) # no corpus yet: 0
    if go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" -parallel 1 ./$pkg/ >"$fuzzlog" 2>&1; then
      echo "$f: $(tail -n 1 "$fuzzlog")"
      break
    fi
    tail -n 30 "$fuzzlog"
    after=$(ls $pkg/testdata/fuzz/$f 2>/dev/null | wc -l || true)
    if [ "$after" -gt "$before" ] || [ "$try" -eq 2 ]; then
      echo "fuzzing $f failed"; rm -f "$fuzzlog"; exit 1
    fi
    echo "$f: fuzzing run failed without a failing input; retrying once"
  done
done
rm -f "$fuzzlog"

if [ "$(id -u)" -eq 0 ] && [ "${SKIP_DEB:-}" != 1 ]; then
  echo "== .deb: build, install, check, purge"
  deb=$(packaging/build-deb.sh)
  packaging/test-deb.sh "$deb"
  packaging/lintian.sh "$deb"
else
  echo "== .deb: skipped (needs root; CI runs it)"
fi
echo "== all tests passed"
