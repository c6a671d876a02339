"""Offline stand-in for @rules_cc//cc:defs.bzl (see ../../README.md).

Bazel 4.2.3's own @bazel_tools//tools/cpp and @local_config_cc BUILD files load
these names from @rules_cc, which Bazel would otherwise download from GitHub.
Each one simply forwards to the rule that is built into Bazel 4.
"""

def cc_binary(**kwargs):
    native.cc_binary(**kwargs)

def cc_import(**kwargs):
    native.cc_import(**kwargs)

def cc_library(**kwargs):
    native.cc_library(**kwargs)

def cc_proto_library(**kwargs):
    native.cc_proto_library(**kwargs)

def cc_test(**kwargs):
    native.cc_test(**kwargs)

def cc_toolchain(**kwargs):
    native.cc_toolchain(**kwargs)

def cc_toolchain_suite(**kwargs):
    native.cc_toolchain_suite(**kwargs)

def objc_import(**kwargs):
    native.objc_import(**kwargs)

def objc_library(**kwargs):
    native.objc_library(**kwargs)
