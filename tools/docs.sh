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
#   DOCS_REUSE_ENV=1  reuse the environment that the last build saved in
#            DOCS_OUT instead of rereading every page: only the pages changed
#            since are read, written and checked again (tests/docs_test.py's
#            second build, on top of a full one; not a check of the site)
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
# nitpicky (every cross-reference must resolve); -E: reread every page:
# Sphinx warns about a page only when it reads or writes it, so a build that
# reused the saved environment would pass a site whose unchanged pages still
# have the problems an earlier build reported.
FRESH=(-E)
if [[ "${DOCS_REUSE_ENV:-0}" == 1 ]]; then
  FRESH=()
fi
"${PYTHON}" -m sphinx -b html -W --keep-going -n "${FRESH[@]}" -q docs "${OUT}"
echo "Built ${OUT}/index.html"
