"""pyproject.toml's dependency ranges against the pinned lock and the imports.

pyproject.toml declares what `pip install pax_haiku` needs as version
ranges (extras `[train]`, `[test]`); requirements.txt pins exact versions for
tools/setup.sh and Bazel. These tests keep the two from drifting apart and
keep the runtime list equal to what `pax_haiku/` really imports.
"""

import ast
import os
import re
import sys
import tomllib
from typing import Dict, List

from absl.testing import absltest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Import name -> distribution name, for the packages pax_haiku imports.
_DISTRIBUTION_OF = {"haiku": "dm-haiku", "jax": "jax", "chex": "chex",
                    "optax": "optax", "jmp": "jmp", "numpy": "numpy"}


def read_pyproject() -> dict:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def read_lock(text: str) -> Dict[str, str]:
  """`{canonical name: version}` of a requirements.txt of `name==version`."""
  pins = {}
  for number, raw in enumerate(text.splitlines(), 1):
    line = raw.split("#", 1)[0].strip()
    if not line:
      continue
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
    if not m:
      raise ValueError(f"requirements.txt line {number}: {line!r} is not a "
                       "plain `name==version` pin.")
    pins[canonicalize_name(m.group(1))] = m.group(2)
  return pins


def lock_problems(ranges: List[str], pins: Dict[str, str],
                  project: str) -> List[str]:
  """What is wrong with `pins` (the lock) for the declared `ranges`."""
  problems = []
  for spec in ranges:
    req = Requirement(spec)
    name = canonicalize_name(req.name)
    if name == canonicalize_name(project):  # An extra naming another extra.
      continue
    if name not in pins:
      problems.append(f"{spec}: not pinned in requirements.txt")
    elif not req.specifier.contains(pins[name], prereleases=True):
      problems.append(f"{spec}: the lock pins {req.name}=={pins[name]}, "
                      "outside the range")
  return problems


def all_ranges(pyproject: dict) -> List[str]:
  """Every declared range: runtime, extras and the build system's."""
  project = pyproject["project"]
  ranges = list(project["dependencies"])
  for extra in project.get("optional-dependencies", {}).values():
    ranges += extra
  return ranges + list(pyproject.get("build-system", {}).get("requires", []))


def top_level_imports(package_dir: str) -> set:
  names = set()
  for dirpath, _, files in os.walk(package_dir):
    for name in files:
      if not name.endswith(".py"):
        continue
      with open(os.path.join(dirpath, name), encoding="utf-8") as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
          names.add(node.module.split(".")[0])
  return names


class PackagingTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.pyproject = read_pyproject()
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as f:
      self.pins = read_lock(f.read())

  def test_lock_satisfies_every_range(self):
    self.assertEqual(
        lock_problems(all_ranges(self.pyproject), self.pins,
                      self.pyproject["project"]["name"]), [])

  def test_every_pin_is_declared(self):
    declared = {canonicalize_name(Requirement(s).name)
                for s in all_ranges(self.pyproject)}
    self.assertEqual(sorted(set(self.pins) - declared), [])

  def test_check_catches_a_bad_lock(self):
    pins = dict(self.pins, jax="0.9.0")
    del pins["optax"]
    problems = lock_problems(self.pyproject["project"]["dependencies"], pins,
                             "pax_haiku")
    self.assertLen(problems, 2)
    self.assertIn("the lock pins jax==0.9.0, outside the range", problems[0])
    self.assertIn("optax", problems[1])
    with self.assertRaisesRegex(ValueError, "line 2: 'jax>=0.10' is not"):
      read_lock("numpy==2.4.6\njax>=0.10\n")

  def test_runtime_dependencies_are_what_pax_haiku_imports(self):
    imported = top_level_imports(os.path.join(ROOT, "pax_haiku"))
    third_party = {n for n in imported
                   if n not in sys.stdlib_module_names and n != "pax_haiku"}
    self.assertEqual(sorted(third_party - set(_DISTRIBUTION_OF)), [],
                     "pax_haiku imports a package that is not declared")
    declared = {canonicalize_name(Requirement(s).name)
                for s in self.pyproject["project"]["dependencies"]}
    # jaxlib is jax's compiled half: pinned with it, never imported directly.
    self.assertEqual(
        declared,
        {canonicalize_name(_DISTRIBUTION_OF[n]) for n in third_party}
        | {"jaxlib"})

  def test_test_and_train_tools_are_extras_only(self):
    runtime = {canonicalize_name(Requirement(s).name)
               for s in self.pyproject["project"]["dependencies"]}
    for name in ("pytest", "hypothesis", "matplotlib", "absl-py",
                 "ml-collections", "tensorboard", "tensorboardx"):
      self.assertNotIn(name, runtime)


if __name__ == "__main__":
  quick_exit.main()
