#!/bin/sh
# Runs the PHP client's tests: the unit suite (against a fake daemon) and the
# integration suite (against the real apnsd in -demo mode).
#
#   ./run-tests.sh                 both suites
#   ./run-tests.sh unit            one suite
#   APNSD_BIN=/path/to/apnsd ./run-tests.sh
#
# The integration suite needs the daemon binary (default <repo>/bin/apnsd):
#   (cd ../.. && go build -o bin/apnsd ./cmd/apnsd)
# Exits non-zero if any suite fails.
set -u
cd "$(dirname "$0")" || exit 2
PHPUNIT=${PHPUNIT:-phpunit}

if ! command -v "$PHPUNIT" >/dev/null 2>&1; then
    echo "run-tests.sh: $PHPUNIT not found (Debian: apt-get install phpunit)" >&2
    exit 2
fi

suites=${*:-unit integration}
status=0
for suite in $suites; do
    echo "== PHPUnit suite: $suite"
    "$PHPUNIT" --configuration phpunit.xml.dist --testsuite "$suite" || status=1
done
if [ "$status" -ne 0 ]; then
    echo "run-tests.sh: FAILED" >&2
else
    echo "run-tests.sh: all suites passed"
fi
exit "$status"
