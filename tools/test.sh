#!/usr/bin/env bash
# Runs every test of pax_haiku after making sure the tools and the pinned
# packages are installed:
#   1. tools/setup.sh                   (installs bazel, pip, requirements.txt,
#                                        pax_haiku itself, editable)
#   2. bazel test //...                 (the Bazel path; flags in .bazelrc;
#                                        one persistent JAX compilation
#                                        cache for every test process),
#      beside it tools/check_bazel_dependency.sh (another workspace builds
#                                        on @pax_haiku//tools/trainer)
#   3. python3 -m pytest -q tests       (the pip path; only with
#                                        PAX_TEST_PYTEST=1: it reruns the same
#                                        files and doubles the time)
# The script exits non-zero if a path failed or ran no test while the
# repository has tests to run. A half that did not run says `skipped` in the
# summary, never OK.
#
# Extra arguments go to `bazel test` (e.g. `bash tools/test.sh --config=...`).
# Environment: BAZEL (default: bazel), PYTHON (default: python3), CI (when
# set, the Bazel server is shut down at the end so no daemon outlives the run),
# PAX_TEST_JAX_CACHE (the tests' compilation cache directory, default
# ~/.cache/pax_haiku/test_jax_cache; `none`: no shared cache).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BAZEL="${BAZEL:-bazel}"
PYTHON="${PYTHON:-python3}"

bash tools/setup.sh || { echo "tools/test.sh: FAILED (tools/setup.sh)"; exit 1; }

work="$(mktemp -d)"
dependency_pid=""
trap '[[ -n "${dependency_pid}" ]] && kill "${dependency_pid}" 2>/dev/null; rm -rf "${work}"' EXIT

# --- 1. Bazel ------------------------------------------------------------------
bazel_flags=()
[[ -t 1 ]] || bazel_flags+=(--curses=no --color=no)
# The test processes share one persistent JAX compilation cache: many of
# them compile the same programs (the smoke config's training step, Haiku's
# initializers of common shapes), and a program compiled once is read from
# disk by the others. Keys are JAX's (the program, the XLA flags, the
# versions), so an old entry is never used for a changed program; a cache
# over 1 GiB is started afresh. PAX_TEST_JAX_CACHE=none turns it off.
cache_env=()
jax_cache="${PAX_TEST_JAX_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/pax_haiku/test_jax_cache}"
if [[ "${jax_cache}" != none ]]; then
  if [[ -d "${jax_cache}" ]] && (( $(du -sm "${jax_cache}" | cut -f1) > 1024 )); then
    rm -rf "${jax_cache}"
  fi
  mkdir -p "${jax_cache}"
  cache_env=(JAX_COMPILATION_CACHE_DIR="${jax_cache}"
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0)
  bazel_flags+=(--sandbox_writable_path="${jax_cache}")
  for setting in "${cache_env[@]}"; do
    bazel_flags+=(--test_env="${setting}")
  done
fi

# Another workspace depending on @pax_haiku//tools/trainer builds and trains
# (its own Bazel server), beside the tests; its training run (`bazel run`
# passes this environment on) shares the tests' compilation cache.
env BAZEL="${BAZEL}" "${cache_env[@]}" bash tools/check_bazel_dependency.sh \
  > "${work}/dependency.log" 2>&1 &
dependency_pid=$!

echo "==> ${BAZEL} test //... $*"
start=${SECONDS}
"${BAZEL}" test "${bazel_flags[@]}" "$@" //... 2>&1 | tee "${work}/bazel.log"
bazel_rc=${PIPESTATUS[0]}
bazel_secs=$((SECONDS - start))
# Per-target summary lines look like "//pkg:foo_test   (cached) PASSED in 1.2s".
bazel_passed=$(grep -cE '^//[^ ]+ +.*\bPASSED\b' "${work}/bazel.log" || true)
bazel_failed=$(grep -cE '^//[^ ]+ +.*\b(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)\b' "${work}/bazel.log" || true)
if [[ ${bazel_rc} == 0 ]]; then
  bazel_ok=1
elif [[ ${bazel_rc} == 4 && ! -d tests ]]; then
  # Exit code 4: built fine, but no test target exists. Acceptable only while
  # the repository has no tests/ at all.
  echo "tools/test.sh: note: no Bazel test targets (and no tests/ directory)"
  bazel_ok=1
else
  bazel_ok=0
  [[ ${bazel_rc} == 4 ]] && echo "tools/test.sh: bazel found no test target, but tests/ exists: add BUILD targets (DEVELOPERS.md)"
fi

echo "==> tools/check_bazel_dependency.sh (ran beside the tests)"
wait "${dependency_pid}"
dependency_rc=$?
cat "${work}/dependency.log"
if [[ ${dependency_rc} != 0 ]]; then
  bazel_ok=0
fi

if [[ -n "${CI:-}" ]]; then
  "${BAZEL}" shutdown >/dev/null 2>&1 || true
fi

# --- 2. pytest -------------------------------------------------------------------
pytest_passed=0 pytest_failed=0 pytest_skipped=0
if [[ "${PAX_TEST_PYTEST:-0}" != 1 ]]; then
  # Bazel already ran every *_test.py; the pip path (`python3 -m pytest
  # tests`) runs the same files again, doubling the time, so it is opt-in.
  echo "==> pytest path skipped (set PAX_TEST_PYTEST=1 to also run it)"
  pytest_ok=1 pytest_ran=0 pytest_why="set PAX_TEST_PYTEST=1 to run it"
elif [[ -d tests ]]; then
  echo "==> ${PYTHON} -m pytest -q tests"
  start=${SECONDS}
  "${PYTHON}" -m pytest -q tests --junitxml="${work}/pytest.xml"
  pytest_rc=$?
  pytest_secs=$((SECONDS - start))
  if [[ -f "${work}/pytest.xml" ]]; then
    read -r pytest_passed pytest_failed pytest_skipped < <("${PYTHON}" - "${work}/pytest.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
count = lambda key: sum(int(s.get(key, 0)) for s in suites)
tests, failed = count("tests"), count("failures") + count("errors")
skipped = count("skipped")
print(tests - failed - skipped, failed, skipped)
PY
    )
  fi
  # Exit code 5 = pytest collected no test: a failure, since tests/ exists.
  [[ ${pytest_rc} == 5 ]] && echo "tools/test.sh: pytest collected no test in tests/"
  if [[ ${pytest_rc} == 0 ]]; then pytest_ok=1; else pytest_ok=0; fi
  pytest_ran=1
else
  echo "==> no tests/ directory: pytest skipped"
  pytest_ok=1 pytest_ran=0 pytest_why="no tests/ directory"
fi

# --- summary -------------------------------------------------------------------
word() { if [[ $1 == 1 ]]; then echo OK; else echo FAILED; fi; }
echo
echo "bazel test //...: $(word ${bazel_ok}) (exit ${bazel_rc}; ${bazel_passed} targets passed, ${bazel_failed} failed; ${bazel_secs}s)"
if [[ ${pytest_ran} == 1 ]]; then
  echo "pytest tests:     $(word ${pytest_ok}) (exit ${pytest_rc}; ${pytest_passed} passed, ${pytest_failed} failed, ${pytest_skipped} skipped; ${pytest_secs}s)"
else
  echo "pytest tests:     skipped (${pytest_why})"
fi
if [[ ${bazel_ok} == 1 && ${pytest_ok} == 1 ]]; then verdict=PASSED; else verdict=FAILED; fi
# Closing line, in the plain "N passed, N failed" form: Bazel test targets
# plus pytest test cases (none when that half was skipped), after the verdict
# of tools/test.sh as a whole.
echo "${verdict}: $((bazel_passed + pytest_passed)) passed, $((bazel_failed + pytest_failed)) failed"
[[ ${verdict} == PASSED ]]
