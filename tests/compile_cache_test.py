"""pax.enable_compilation_cache and the binary's cache setting."""

import os
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp

import pax_haiku as pax
from pax_haiku._src import compilation_cache
from tools.trainer import compile_cache
from tools.trainer import config_schema
import quick_exit  # tests/quick_exit.py, beside this file


class EnableCompilationCacheTest(absltest.TestCase):

  def tearDown(self):
    pax.disable_compilation_cache()
    super().tearDown()

  def test_compiled_programs_are_written_to_the_directory(self):
    path = self.create_tempdir().full_path
    self.assertEqual(pax.enable_compilation_cache(path), path)
    self.assertEqual(jax.config.jax_compilation_cache_dir, path)
    # A program compiled in milliseconds is cached too.
    jax.jit(lambda x: x * 3 + 1)(jnp.arange(7.0)).block_until_ready()
    self.assertNotEmpty(os.listdir(path))
    pax.disable_compilation_cache()
    self.assertIsNone(jax.config.jax_compilation_cache_dir)

  def test_default_directory(self):
    with mock.patch.dict(os.environ, {"PAX_HAIKU_CACHE_DIR": "",
                                      "XDG_CACHE_HOME": "/x/cache"}):
      self.assertEqual(compilation_cache.default_cache_dir(),
                       "/x/cache/pax_haiku/jax")
    with mock.patch.dict(os.environ, {"PAX_HAIKU_CACHE_DIR": "/y"}):
      self.assertEqual(compilation_cache.default_cache_dir(), "/y")

  def test_unusable_directory_is_a_clear_error_and_the_fix_works(self):
    blocker = self.create_tempfile("not_a_dir").full_path
    with self.assertRaisesRegex(ValueError, r"Cannot use .*not_a_dir[\s\S]*Fix: "
                                r"pass a writable directory"):
      pax.enable_compilation_cache(os.path.join(blocker, "jax"))
    with self.assertRaisesRegex(TypeError, "path must be a directory path"):
      pax.enable_compilation_cache(3)
    # The fix the message suggests.
    self.assertEqual(pax.enable_compilation_cache("/tmp/jax"), "/tmp/jax")


class BinaryCacheTest(absltest.TestCase):

  def tearDown(self):
    pax.disable_compilation_cache()
    super().tearDown()

  def test_on_by_default_in_the_user_cache_directory(self):
    config = config_schema.base_config()
    self.assertTrue(config.compilation_cache)
    path = self.create_tempdir().full_path
    with mock.patch.dict(os.environ, {"PAX_HAIKU_CACHE_DIR": path}):
      self.assertEqual(compile_cache.setup(config), path)
    self.assertEqual(jax.config.jax_compilation_cache_dir, path)

  def test_off(self):
    config = config_schema.base_config()
    config.compilation_cache = False
    self.assertIsNone(compile_cache.setup(config))
    self.assertIsNone(jax.config.jax_compilation_cache_dir)

  def test_bad_value_is_a_clear_error_and_the_fix_works(self):
    config = config_schema.base_config()
    config.compilation_cache = None  # ConfigDict keeps the type otherwise.
    config.compilation_cache = "no"
    with self.assertRaisesRegex(
        ValueError, r"`compilation_cache` must be True or False, got 'no'"
        r"[\s\S]*--config.compilation_cache=False"):
      compile_cache.setup(config)
    config = config_schema.base_config()
    config.compilation_cache = False  # The suggested fix.
    self.assertIsNone(compile_cache.setup(config))

  def test_unusable_directory_warns_and_trains_without_cache(self):
    blocker = self.create_tempfile("not_a_dir").full_path
    with mock.patch.dict(os.environ, {"PAX_HAIKU_CACHE_DIR": blocker}):
      with self.assertLogs(level="WARNING") as logs:
        self.assertIsNone(compile_cache.setup(config_schema.base_config()))
    self.assertRegex(logs.output[0], r"Cannot use .*not_a_dir[\s\S]*goes on "
                     r"without the persistent compilation cache")
    self.assertIsNone(jax.config.jax_compilation_cache_dir)

  def test_a_directory_given_to_jax_is_kept(self):
    path = self.create_tempdir().full_path
    jax.config.update("jax_compilation_cache_dir", path)
    self.assertEqual(compile_cache.setup(config_schema.base_config()), path)


if __name__ == "__main__":
  quick_exit.main()
