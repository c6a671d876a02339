"""Offline stand-in for @rules_java//java:defs.bzl (see ../../README.md).

Bazel 4.2.3's own @bazel_tools//tools/jdk BUILD files load these names
(java_toolchain, java_runtime, java_import, ...) from @rules_java, which Bazel
would otherwise download from GitHub. Each one simply forwards to the rule that
is built into Bazel 4. No Java is compiled for this project.
"""

def java_binary(**kwargs):
    native.java_binary(**kwargs)

def java_import(**kwargs):
    native.java_import(**kwargs)

def java_library(**kwargs):
    native.java_library(**kwargs)

def java_lite_proto_library(**kwargs):
    native.java_lite_proto_library(**kwargs)

def java_plugin(**kwargs):
    native.java_plugin(**kwargs)

def java_proto_library(**kwargs):
    native.java_proto_library(**kwargs)

def java_runtime(**kwargs):
    native.java_runtime(**kwargs)

def java_test(**kwargs):
    native.java_test(**kwargs)

def java_toolchain(**kwargs):
    native.java_toolchain(**kwargs)
