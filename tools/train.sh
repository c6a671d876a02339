#!/usr/bin/env bash
# The README's first command: installs what is missing (tools/setup.sh), then
# trains the default config (configs/digits_mlp.py: an MLP on the UCI digits
# shipped in third_party/) and prints the final test accuracy and where the
# checkpoint, metrics and plot are. Rerunning resumes from the checkpoint.
#
#   bash tools/train.sh                          # default config and workdir
#   bash tools/train.sh --config=configs/digits_cnn.py --workdir=/tmp/cnn
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh
args=("$@")
[[ " ${args[*]} " == *" --config="* ]] || args+=(--config=configs/digits_mlp.py)
[[ " ${args[*]} " == *" --workdir="* ]] || args+=(--workdir="${WORKDIR:-/tmp/pax_haiku/digits_mlp}")
exec python3 tools/train.py "${args[@]}"
