#!/usr/bin/env bash
# Checks that another Bazel workspace can depend on the trainer as a
# library: it creates a throwaway workspace that names this repository
# `@pax_haiku` (local_repository, plus the offline stub repositories), builds
# a py_binary depending on `@pax_haiku//tools/trainer` and runs it: 20 steps
# of configs/smoke.py through train_lib.train_and_evaluate. Exits non-zero if
# any of that fails. tools/test.sh runs it; DEVELOPERS.md ("Bazel").
#
# Environment: BAZEL (default: bazel).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BAZEL="${BAZEL:-bazel}"
ws="$(mktemp -d)"
trap '(cd "${ws}" && "${BAZEL}" shutdown >/dev/null 2>&1 || true); rm -rf "${ws}"' EXIT

stubs="${repo}/third_party/bazel_stubs"
cat > "${ws}/WORKSPACE" <<WS
workspace(name = "user_project")

local_repository(name = "pax_haiku", path = "${repo}")

local_repository(name = "rules_cc", path = "${stubs}/rules_cc")

local_repository(name = "rules_java", path = "${stubs}/rules_java")

local_repository(name = "remote_coverage_tools", path = "${stubs}/remote_coverage_tools")

register_toolchains("@pax_haiku//tools/python_toolchain:python3_toolchain")
WS
grep -v '^try-import' "${repo}/.bazelrc" > "${ws}/.bazelrc"
cat > "${ws}/BUILD" <<'BUILD'
py_binary(
    name = "my_train",
    srcs = ["my_train.py"],
    python_version = "PY3",
    deps = [
        "@pax_haiku//configs",
        "@pax_haiku//tools/trainer",
    ],
)
BUILD
cat > "${ws}/my_train.py" <<'PY'
import sys

from configs import smoke
from tools.trainer import train_lib

config = smoke.get_config()
config.num_steps = 20
config.checkpoint_every = config.eval_every = 20
config.plot = False
result = train_lib.train_and_evaluate(config, sys.argv[1])
print(f"trained {result['step']} steps, checkpoint {result['checkpoint']}")
PY

flags=()
[[ -t 1 ]] || flags+=(--curses=no --color=no)
cd "${ws}"
"${BAZEL}" run "${flags[@]}" //:my_train -- "${ws}/run" 2>&1 | tee "${ws}/log" \
  | grep -E '^(trained|ERROR|error)' || true
grep -q "^trained 20 steps, checkpoint ${ws}/run/checkpoints/20" "${ws}/log" || {
  echo "tools/check_bazel_dependency.sh: FAILED (log above)"; tail -30 "${ws}/log"; exit 1; }
echo "tools/check_bazel_dependency.sh: OK (@pax_haiku//tools/trainer from another workspace)"
