#!/usr/bin/env bash
# Installs what pax_haiku's builds and tests need, on a Debian machine that
# starts with only python3 and root. Idempotent: when everything is already
# there it only checks (a second run takes about a second).
#
#   * bazel     -> Debian's `bazel-bootstrap` (Bazel 4.2.3), via apt-get
#   * pip       -> `python3 -m ensurepip`, else Debian's `python3-pip`
#   * packages  -> `python3 -m pip install -r requirements.txt`, only when a
#                  pin in requirements.txt is not satisfied by the installed
#                  distribution of that name
#   * pax_haiku -> `python3 -m pip install --no-deps --no-build-isolation -e .`
#                  (editable, built with the pinned setuptools), only
#                  when `import pax_haiku` from outside the checkout does not
#                  already load this checkout's pax_haiku/
#
# Environment:
#   PYTHON   interpreter to install into (default: python3 on PATH; Bazel's
#            tests use the python3 on PATH, see tools/python_toolchain/)
#   SKIP_BAZEL=1     don't install Bazel (pip-only set-up)
#   SKIP_EDITABLE=1  don't install the project itself (only requirements.txt)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
REQUIREMENTS="requirements.txt"

log() { echo "[setup] $*"; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [[ "${apt_updated}" == 0 ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@"
}

# --- python3 -----------------------------------------------------------------
if ! command -v "${PYTHON}" >/dev/null 2>&1; then
  log "${PYTHON} not found; installing Debian's python3"
  apt_install python3
fi

# --- Bazel ---------------------------------------------------------------------
if [[ "${SKIP_BAZEL:-0}" != 1 ]]; then
  if command -v bazel >/dev/null 2>&1; then
    log "bazel: $(command -v bazel)"
  else
    log "bazel not found; installing Debian's bazel-bootstrap (Bazel 4.2.3)"
    apt_install bazel-bootstrap
  fi
fi

# --- pip -----------------------------------------------------------------------
if ! "${PYTHON}" -m pip --version >/dev/null 2>&1; then
  log "pip not found for ${PYTHON}; trying ensurepip"
  # Debian disables ensurepip for its system python; fall back to apt.
  if ! "${PYTHON}" -m ensurepip --upgrade >/dev/null 2>&1 \
      || ! "${PYTHON}" -m pip --version >/dev/null 2>&1; then
    log "ensurepip unavailable; installing Debian's python3-pip"
    apt_install python3-pip
  fi
fi

# --- pinned packages -----------------------------------------------------------
# Fast check: every `name==version` line of requirements.txt must match the
# installed distribution's version (names compared PEP 503-normalised).
# Prints the unsatisfied pins; exit status 1 if there are any.
check_pins() {
  "${PYTHON}" - "${REQUIREMENTS}" <<'PY'
import re
import sys
from importlib import metadata

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

installed = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if name:
        installed.setdefault(norm(name), dist.version)

bad = []
for raw in open(sys.argv[1], encoding="utf-8"):
    line = raw.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
    if not m:  # Not a plain pin: let pip decide.
        bad.append(line + "  (not a plain name==version pin)")
        continue
    have = installed.get(norm(m.group(1)))
    if have != m.group(2):
        bad.append(f"{line}  (installed: {have or 'none'})")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
PY
}

# `python3 -m pip install -q ARGS...`. PEP 668: Debian's own python3 is
# "externally managed" and its pip refuses to install outside a venv. This
# interpreter is the one Bazel runs tests with, so install into it anyway (pip
# puts packages in /usr/local, not in Debian's /usr/lib, so apt's packages are
# not overwritten).
pip_install() {
  local pip_args=(install -q --disable-pip-version-check "$@")
  if "${PYTHON}" - <<'PY'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if (not in_venv and os.path.exists(marker)) else 1)
PY
  then
    log "${PYTHON} is externally managed (PEP 668): using --break-system-packages"
    pip_args+=(--break-system-packages)
  fi
  PIP_ROOT_USER_ACTION=ignore "${PYTHON}" -m pip "${pip_args[@]}"
}

interpreter="$("${PYTHON}" -c 'import sys; print(sys.executable)')"
if unsatisfied="$(check_pins)"; then
  log "all pins in ${REQUIREMENTS} are installed for ${interpreter}"
else
  log "installing ${REQUIREMENTS} for ${interpreter}; unsatisfied pins:"
  echo "${unsatisfied}"
  pip_install -r "${REQUIREMENTS}"
  if ! unsatisfied="$(check_pins)"; then
    log "ERROR: pins still unsatisfied after pip install:"
    echo "${unsatisfied}"
    exit 1
  fi
  log "installed ${REQUIREMENTS}"
fi

# --- the project itself (editable) ----------------------------------------------
# So that `import pax_haiku` works from any directory and loads this
# checkout's sources. Checked from / (not from the checkout, where the
# current directory would find pax_haiku/ anyway).
# The file `import pax_haiku` loads when run from / (empty if none); found
# without importing it (that would import jax).
pax_haiku_origin() {
  (cd / && "${interpreter}" -c 'import importlib.util, os
spec = importlib.util.find_spec("pax_haiku")
print(os.path.realpath(spec.origin) if spec and spec.origin else "")' \
    2>/dev/null) || true
}

if [[ "${SKIP_EDITABLE:-0}" != 1 ]]; then
  want="$(pwd -P)/pax_haiku/__init__.py"
  have="$(pax_haiku_origin)"
  if [[ "${have}" == "${want}" ]]; then
    log "pax_haiku is installed (editable) from $(pwd -P)"
  else
    log "installing pax_haiku (editable) from $(pwd -P)${have:+ (it was: ${have})}"
    # Built with the pinned setuptools installed above: pip's default
    # isolated build would first install setuptools into a throwaway
    # environment (~12 s more on 2 cores).
    pip_install --no-deps --no-build-isolation -e .
    have="$(pax_haiku_origin)"
    if [[ "${have}" != "${want}" ]]; then
      log "ERROR: after pip install -e ., import pax_haiku loads '${have}'"
      exit 1
    fi
    log "installed pax_haiku (editable)"
  fi
fi
