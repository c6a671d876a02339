"""Entry point of every `pax_py_test` Bazel target (see defs.bzl).

Usage: test_main.py RUNFILES_PATH_OF_TEST_FILE [ARGS...]

Runs the test file the way a person would:
  * a file with an `if __name__ == "__main__":` block (absltest.main(),
    unittest.main(), pytest.main(...)) is executed as __main__;
  * any other file is handed to pytest (`bazel test --test_filter=X` becomes
    `-k X`); collecting no test is a failure (pytest exit code 5), so an
    empty or mis-named file cannot pass.
"""

import os
import runpy
import sys


def main() -> None:
  if len(sys.argv) < 2:
    sys.exit("usage: test_main.py TEST_FILE [ARGS...]")
  test_file = os.path.abspath(sys.argv[1])  # cwd: runfiles/<workspace>
  extra_args = sys.argv[2:]
  with open(test_file, encoding="utf-8") as f:
    source = f.read()

  # Import siblings of the test file from runfiles (i.e. only declared deps
  # and data), as `python tests/foo_test.py` would from the source tree.
  sys.path[0] = os.path.dirname(test_file)

  if "__main__" in source:
    sys.argv = [test_file] + extra_args
    runpy.run_path(test_file, run_name="__main__")
    return  # The test's own main() normally exits with its status.

  import pytest  # pylint: disable=g-import-not-at-top

  pytest_args = [test_file, "-p", "no:cacheprovider", "-ra"]
  test_filter = os.environ.get("TESTBRIDGE_TEST_ONLY")  # bazel --test_filter
  if test_filter:
    pytest_args += ["-k", test_filter]
  status = pytest.main(pytest_args + extra_args)
  if status == pytest.ExitCode.NO_TESTS_COLLECTED:
    print(f"test_main.py: pytest collected no test in {sys.argv[1]}",
          file=sys.stderr)
    status = 1
  sys.exit(int(status))


if __name__ == "__main__":
  main()
