"""Bazel macros for pax_haiku: Python 3 libraries, tests and doctests.

Usage (in a BUILD file):

    load("//tools/build_defs:defs.bzl", "pax_py_doctest", "pax_py_library", "pax_py_test")

    pax_py_library(
        name = "context",
        srcs = ["context.py"],
        deps = [],  # other pax_py_library targets; pip packages need no deps
    )

    pax_py_test(
        name = "context_test",       # runs context_test.py
        deps = ["//pax_haiku/_src:context"],
    )

    pax_py_doctest(
        name = "context_doctest",
        modules = ["pax_haiku._src.context"],
        deps = ["//pax_haiku/_src:context"],
    )

Third-party packages (jax, haiku, optax, ...) are not Bazel targets: they are
imported from the python3 the tests run under, where requirements.txt is
installed (tools/setup.sh). See DEVELOPERS.md.
"""

# Files every test gets in its runfiles. requirements.txt makes Bazel re-run
# (not reuse cached results of) all tests when a pin changes, since Bazel
# cannot see the installed packages themselves; pyproject.toml carries the
# pytest settings and conftest.py the repository-wide pytest set-up.
_TEST_DATA = [
    "//:conftest.py",
    "//:pyproject.toml",
    "//:requirements.txt",
]

_TEST_MAIN = "//tools/build_defs:test_main.py"
_DOCTEST_MAIN = "//tools/build_defs:doctest_main.py"

def pax_py_library(name, srcs, deps = [], **kwargs):
    """A Python 3 library: one per module file (plus one per __init__.py)."""
    native.py_library(
        name = name,
        srcs = srcs,
        deps = deps,
        srcs_version = "PY3",
        **kwargs
    )

def pax_py_test(
        name,
        srcs = None,
        deps = [],
        data = [],
        args = [],
        size = "medium",
        tags = [],
        **kwargs):
    """A Python 3 test: one per *_test.py file.

    The test file may be either style, and is run the way it would be run by
    hand:
      * it has an `if __name__ == "__main__":` block (absltest.main(),
        unittest.main(), ...): it is executed as __main__;
      * otherwise (plain pytest functions/classes): it is run by pytest, and
        a file in which pytest collects no test fails.
    Either way a test file cannot silently run nothing under Bazel.

    Args:
      name: target name; by default the test file is `name + ".py"`.
      srcs: the test file (exactly one; helpers belong in a py_library dep).
      deps: py_library targets it imports (e.g. //pax_haiku).
      data: extra runfiles.
      args: extra command-line arguments for the test file / pytest.
      size: Bazel test size (medium: 300 s timeout).
      tags: Bazel tags (e.g. "manual", "exclusive").
      **kwargs: passed to py_test (shard_count, env, timeout, ...).
    """
    if srcs == None:
        srcs = [name + ".py"]
    if len(srcs) != 1:
        fail("pax_py_test %s: srcs must name exactly one test file" % name)
    test_file = srcs[0]
    native.py_test(
        name = name,
        srcs = [test_file, _TEST_MAIN],
        main = _TEST_MAIN,
        args = ["$(rootpath %s)" % test_file] + args,
        deps = deps,
        data = data + _TEST_DATA + native.glob(["conftest.py"]),
        python_version = "PY3",
        srcs_version = "PY3",
        size = size,
        tags = tags,
        **kwargs
    )

def pax_py_doctest(name, modules, deps = [], data = [], size = "medium", tags = [], **kwargs):
    """Runs the docstring examples (doctest) of the named modules.

    Fails if an example fails, if a module cannot be imported, or if the
    listed modules hold no example at all.

    Args:
      name: target name, e.g. "doctests".
      modules: dotted module names, e.g. ["pax_haiku._src.context"].
      deps: py_library targets providing those modules.
      data: extra runfiles.
      size: Bazel test size.
      tags: Bazel tags.
      **kwargs: passed to py_test.
    """
    if not modules:
        fail("pax_py_doctest %s: list at least one module" % name)
    native.py_test(
        name = name,
        srcs = [_DOCTEST_MAIN],
        main = _DOCTEST_MAIN,
        args = modules,
        deps = deps,
        data = data + _TEST_DATA,
        python_version = "PY3",
        srcs_version = "PY3",
        size = size,
        tags = tags,
        **kwargs
    )
