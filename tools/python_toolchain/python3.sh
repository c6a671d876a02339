#!/bin/sh
# Interpreter of the Bazel Python toolchain (see BUILD.bazel here): the
# `python3` first on PATH, i.e. the one `tools/setup.sh` installed
# requirements.txt into. `bazel test` passes the caller's PATH to tests.
exec python3 "$@"
