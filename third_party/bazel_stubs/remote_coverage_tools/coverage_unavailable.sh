#!/bin/sh
# Offline stand-in for @remote_coverage_tools (see ../README.md): the real
# coverage tools are a Java download. Measure coverage on the pytest path
# (e.g. with coverage.py) instead.
echo "bazel coverage is not available offline (third_party/bazel_stubs/remote_coverage_tools)" >&2
exit 1
