#!/usr/bin/env bash
# Runs PAX's own test suite against pax_haiku.
#
#   tools/pax_compat/run.sh PATH_TO_PAX_CHECKOUT [TEST ...] [-- pytest args]
#
# TEST: test files or ids relative to the checkout (default: tests), e.g.
# `tests/test_pax.py` or `tests/test_pax.py::test_shared_weight`.
#
# Every `import pax` (and `pax.<sub>`) is served by pax_haiku and `opax` by a
# shim over optax, through the pytest plugin tools/pax_compat/pax_alias_plugin.py.
# PAX's files are read in place, never copied. tests/test_performance.py (3
# timing tests) is left out. Prints each failure's test id with a one-line
# reason, then `N passed, M failed` as the last line.
set -euo pipefail

if [[ $# -lt 1 || ! -d "$1/tests" ]]; then
  echo "usage: $0 PATH_TO_PAX_CHECKOUT [pytest args]  (a directory holding tests/)" >&2
  exit 2
fi
PAX_DIR="$(cd "$1" && pwd)"
shift
TARGETS=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  TARGETS+=("$PAX_DIR/$1")
  shift
done
[[ $# -gt 0 ]] && shift
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=("$PAX_DIR/tests")
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
REPORT="$WORK/report.txt"
printf '[pytest]\n' > "$WORK/pytest.ini"

# Run from an empty directory so that PAX's checkout is not on sys.path (its
# own `pax` package must never be imported), with no cache files written.
set +e
(cd "$WORK" && \
  PYTHONPATH="$HERE:$REPO${PYTHONPATH:+:$PYTHONPATH}" \
  PAX_COMPAT_REPORT="$REPORT" \
  JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" \
  "$PYTHON" -m pytest -q -p pax_alias_plugin -p no:cacheprovider \
    -c "$WORK/pytest.ini" --rootdir="$PAX_DIR" --import-mode=importlib \
    --continue-on-collection-errors \
    --ignore="$PAX_DIR/tests/test_performance.py" \
    -o addopts="" --tb=no -rN "$@" "${TARGETS[@]}" > "$WORK/pytest.log" 2>&1)
status=$?
set -e
if [[ ! -s "$REPORT" ]]; then
  cat "$WORK/pytest.log" >&2
  echo "pytest did not run (exit status $status)" >&2
  exit 1
fi
echo "Left out: tests/test_performance.py (3 timing tests, machine dependent)."
cat "$REPORT"
