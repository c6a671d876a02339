#!/usr/bin/env bash
# The README's first command: installs what is missing (tools/setup.sh: the
# pinned packages and pax_haiku itself, editable), then trains the default
# config (configs/digits_mlp.py: an MLP on the UCI digits shipped in
# third_party/) and prints the final test accuracy and where the checkpoint,
# metrics and plot are. Rerunning resumes from the checkpoint.
#
#   bash tools/train.sh                          # default config and workdir
#   bash tools/train.sh --config=configs/digits_cnn.py --workdir=/tmp/cnn
#
# The default workdir is $PAX_HAIKU_RUNS/<config name> (PAX_HAIKU_RUNS defaults
# to /tmp/pax_haiku_runs; $WORKDIR overrides the whole path): not
# /tmp/pax_haiku/..., which would be an importable `pax_haiku` namespace
# package for every script run from /tmp, shadowing the installed library.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
bash tools/setup.sh
args=("$@")
config=configs/digits_mlp.py
for a in "${args[@]}"; do
  if [[ "${a}" == --config=* ]]; then config="${a#--config=}"; fi
done
# First: absl reads `--config.key=value` overrides only after `--config`.
[[ " ${args[*]} " == *" --config="* ]] || args=(--config="${config}" "${args[@]}")
name="$(basename "${config}" .py)"
[[ " ${args[*]} " == *" --workdir="* ]] || args+=(--workdir="${WORKDIR:-${PAX_HAIKU_RUNS:-/tmp/pax_haiku_runs}/${name}}")
exec "${PYTHON}" tools/train.py "${args[@]}"
