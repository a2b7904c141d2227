#!/usr/bin/env bash
# Tests of the apnsd Python client.
#
#   clients/python/run-tests.sh          unit + integration + Django tests
#   clients/python/run-tests.sh unit     unit tests only (fake daemon, no binary needed)
#
# The daemon binary is $APNSD_BIN; when unset, it is built into <repo>/bin/apnsd.
# This script starts no daemon itself: the integration and Django tests start
# `apnsd -demo -socket <tmp>` themselves and stop it with SIGTERM.
# Always runs Debian's /usr/bin/python3 (the interpreter that has Django).
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
MODE=${1:-all}

if [ ! -x "$PY" ]; then
    echo "run-tests.sh: $PY not found" >&2
    exit 2
fi

failed=()
cd "$HERE" || exit 2

echo "== unit tests ($PY)"
"$PY" -m unittest tests.test_client tests.test_client_v11 || failed+=("unit")

if [ "$MODE" != "unit" ]; then
    if [ -z "${APNSD_BIN:-}" ]; then
        APNSD_BIN="$REPO/bin/apnsd"
        echo "== building $APNSD_BIN"
        if ! (cd "$REPO" && go build -o "$APNSD_BIN" ./cmd/apnsd); then
            echo "run-tests.sh: building apnsd failed; the integration tests will fail" >&2
            failed+=("build")
        fi
    fi
    export APNSD_BIN
    echo "== integration tests (APNSD_BIN=$APNSD_BIN)"
    "$PY" -m unittest -v tests.test_integration || failed+=("integration")

    if ! "$PY" -c 'import django' 2>/dev/null; then
        echo "run-tests.sh: Django is not importable by $PY (apt-get install python3-django)" >&2
        failed+=("django-missing")
    else
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/apnsd-dj.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        echo "== Django example project tests (APNSD_SOCKET=$tmp/apnsd.sock)"
        (cd example_project && APNSD_SOCKET="$tmp/apnsd.sock" "$PY" manage.py test -v 2) \
            || failed+=("django")
    fi
fi

if [ ${#failed[@]} -ne 0 ]; then
    echo "== FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "== all passed"
