#!/usr/bin/env bash
# Builds the documentation site into build/docs/html, offline, warnings as
# errors: a broken cross-reference, a missing page or include, a docstring
# that does not parse, or a public name without documentation
# (docs/_ext/pax_docs.py) fails the build.
#
#   bash tools/docs.sh            # then open build/docs/html/index.html
#
# Sphinx, myst-parser and furo are the [docs] extra, pinned in
# requirements.txt (bash tools/setup.sh installs them). Nothing is fetched
# while building: no intersphinx, the theme's assets ship in its package.
# The code in the guides runs in tests/docs_test.py, not here.
#
# Environment:
#   PYTHON   interpreter (default: python3 on PATH)
#   DOCS_OUT output folder (default: build/docs/html)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
OUT="${DOCS_OUT:-build/docs/html}"

if ! "${PYTHON}" -c "import sphinx, myst_parser, furo" 2>/dev/null; then
  echo "error: Sphinx, myst-parser or furo (the [docs] extra) is not" \
    "installed for ${PYTHON}." >&2
  echo "Fix: bash tools/setup.sh (it installs the pins of requirements.txt)," \
    "then rerun bash tools/docs.sh." >&2
  exit 2
fi

# -W: warnings are errors; --keep-going: report all of them first; -n:
# nitpicky (every cross-reference must resolve); -E: reread every page.
"${PYTHON}" -m sphinx -b html -W --keep-going -n -E -q docs "${OUT}"
echo "Built ${OUT}/index.html"
