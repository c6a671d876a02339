"""Repository-wide pytest set-up (for `python3 -m pytest tests`, and for the
pytest-style files that Bazel's tools/build_defs/test_main.py hands to pytest).

absltest.TestCase methods such as create_tempdir() read absl flags
(--test_tmpdir), which absltest.main() parses when a test file is run
directly. Under pytest nothing parses them and those calls raise
UnparsedFlagAccessError, so mark the flags as parsed (with their defaults).
"""

from absl import flags


def pytest_configure(config):
  del config  # unused
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
