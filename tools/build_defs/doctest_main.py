"""Entry point of every `pax_py_doctest` Bazel target (see defs.bzl).

Usage: doctest_main.py MODULE [MODULE...]

Imports each dotted module name and runs its docstring examples with
ELLIPSIS and NORMALIZE_WHITESPACE. Exits non-zero if any example fails or if
the listed modules hold no example at all (a stale target list).
"""

import doctest
import importlib
import sys


def main() -> None:
  modules = sys.argv[1:]
  if not modules:
    sys.exit("usage: doctest_main.py MODULE [MODULE...]")
  flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
  attempted = failed = 0
  for name in modules:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=flags)
    print(f"{name}: {result.attempted} examples, {result.failed} failed")
    attempted += result.attempted
    failed += result.failed
  print(f"{attempted - failed} passed, {failed} failed")
  if failed:
    sys.exit(1)
  if not attempted:
    sys.exit("doctest_main.py: no doctest examples in " + ", ".join(modules))


if __name__ == "__main__":
  main()
