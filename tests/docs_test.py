"""The documentation site: API coverage, the guides' code, and the build.

* Every public name is on an API page with a docstring
  (`docs/_ext/pax_docs.py`, the check tools/docs.sh also runs).
* Every ```python block of every guide (docs/*.md and the files they
  include: README.md, BENCHMARKS.md) runs, in order, one namespace per
  page, as a reader would paste them. A page whose examples refer to a
  finished training run gets one from `_SETUP` first.
* Every shell block (```bash, ```sh) is checked, not run (a training run
  takes minutes): each command's script, module, config file and Bazel
  target must exist, and every flag and `--config.KEY` it passes must be
  one that the script defines.
* `bash tools/docs.sh` itself (~15 s), on a copy of the site: without
  Sphinx it says what to run, and after that the site builds with warnings
  as errors; a broken cross-reference then fails it (a second build that
  rereads only the page changed, ~5 s).
"""

import contextlib
import doctest
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from typing import Any, Dict, List

from absl.testing import absltest
from absl.testing import parameterized
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
import pax_docs  # pylint: disable=g-import-not-at-top,wrong-import-position

_SHELL = ("bash", "sh", "shell", "console")


def _guides() -> List[str]:
  return [os.path.relpath(p, ROOT) for p in pax_docs.guide_files()]


def _named_guides() -> List[tuple]:
  """`(test name suffix, guide path)`, so that a failure names its page."""
  return [(re.sub(r"\W", "_", g), g) for g in _guides()]


# -- a finished training run, for the pages that open its checkpoints --------

_RUN: Dict[str, Any] = {}


def _training_run() -> Dict[str, Any]:
  """A 20-step configs/smoke.py run (~5 s), shared by the pages needing one."""
  if not _RUN:
    from configs import smoke  # pylint: disable=g-import-not-at-top
    from tools.trainer import train_lib  # pylint: disable=g-import-not-at-top
    config = smoke.get_config()
    config.num_steps = config.eval_every = 20
    workdir = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    _RUN.update(train_lib.train_and_evaluate(config, workdir),
                workdir=workdir, config=config)
  return _RUN


def _checkpoint_setup(ns: Dict[str, Any]) -> None:
  """What README.md's and docs/checkpoints.md's snippets assume: `workdir`
  and `step` of a finished run, orbax, the digits' test `images`, and the
  pax `model` of the run's config."""
  import orbax.checkpoint  # pylint: disable=g-import-not-at-top
  from tools.trainer import data  # pylint: disable=g-import-not-at-top
  from tools.trainer import models  # pylint: disable=g-import-not-at-top

  run = _training_run()
  ns.update(orbax=orbax, workdir=run["workdir"], step=run["step"],
            images=data.load_digits().test[0],
            model=models.build_model(run["config"]))


def _pax_pickle_setup(ns: Dict[str, Any]) -> None:
  """docs/pax_compat.md loads `pax_model.pkl`, a PAX pickle: written here in
  PAX's format (its state_dict layout) for the page's architecture."""
  del ns
  import pickle  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import pax_haiku as pax  # pylint: disable=g-import-not-at-top
  from pax_haiku._src import pax_state_dict  # pylint: disable=g-import-not-at-top
  net = pax.Sequential(pax.Linear(784, 256), jax.nn.relu, pax.Linear(256, 10))
  with open("pax_model.pkl", "wb") as f:
    pickle.dump({"state_dict": pax_state_dict.state_dict(net)}, f)


_SETUP = {
    "README.md": _checkpoint_setup,
    "docs/checkpoints.md": _checkpoint_setup,
    "docs/pax_compat.md": _pax_pickle_setup,
}


@contextlib.contextmanager
def _in_tempdir():
  old = os.getcwd()
  with tempfile.TemporaryDirectory(
      dir=absltest.get_default_test_tmpdir()) as tmp:
    os.chdir(tmp)
    try:
      yield tmp
    finally:
      os.chdir(old)


# -- shell commands -------------------------------------------------------------


def _flags_of(path: str) -> set:
  """The absl flags a script defines (by reading it: nothing is run)."""
  with open(path, encoding="utf-8") as f:
    source = f.read()
  names = set(re.findall(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']", source))
  return names | {"help", "helpfull"}


def _load_config(path: str):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("_docs_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _has_key(config, key: str) -> bool:
  node = config
  for part in key.split("."):
    if part not in node:
      return False
    node = node[part]
  return True


def _path(arg: str) -> str:
  return os.path.join(ROOT, re.sub(r"^\$PWD/", "", arg))


def _script_problems(script: str, args: List[str]) -> List[str]:
  """Flags of a Python script of this repository, and the binary's configs."""
  if not os.path.exists(_path(script)):
    return [f"{script}: no such file"]
  known = _flags_of(_path(script))
  is_trainer = os.path.basename(script) in ("train.py", "convert_checkpoint.py")
  config = None
  problems = []
  for arg in args:
    m = re.match(r"--(no)?([\w.]+)(?:=(.*))?$", arg)
    if not m:
      continue  # A flag's separate value, or a positional argument.
    name, value = m.group(2), m.group(3)
    if is_trainer and name == "config":
      if not os.path.exists(_path(value)):
        problems.append(f"--config={value}: no such config file")
      else:
        config = _load_config(_path(value))
    elif is_trainer and name.startswith("config."):
      if config is None:
        config = _load_config(os.path.join(ROOT, "configs", "digits_mlp.py"))
      if not _has_key(config, name[len("config."):]):
        problems.append(f"{arg}: the config has no key {name[7:]!r}")
    elif name not in known:
      problems.append(f"{arg}: {script} defines no flag --{name}")
  return problems


def _extras() -> set:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return set(tomllib.load(f)["project"]["optional-dependencies"])


def command_problems(command: str) -> List[str]:
  """Why one shell command of a guide would not run as written ([] if it
  would, as far as can be told without running it)."""
  words = shlex.split(command, comments=True)
  while words and re.match(r"[A-Z_][A-Z0-9_]*=", words[0]):
    words = words[1:]  # Environment assignments (XLA_FLAGS=...).
  if not words:
    return []
  tool, args = words[0], words[1:]
  if tool == "python3" and args[:2] == ["-m", "pytest"]:
    return [f"{a}: no such file" for a in args[2:]
            if a.startswith("tests/") and not os.path.exists(_path(a))]
  if tool == "python3" and args[:2] == ["-m", "pip"]:
    tool, args = "pip", args[2:]
  if tool == "python3" and args[:1] == ["-m"]:
    script = args[1].replace(".", "/") + ".py"
    return _script_problems(script, args[2:])
  if tool == "python3":
    return _script_problems(args[0], args[1:])
  if tool == "bash" or tool.endswith(".sh"):
    script = args[0] if tool == "bash" else tool
    return [] if os.path.exists(_path(script)) else [f"{script}: no such file"]
  if tool == "bazel":
    m = re.fullmatch(r"//([\w/]+):(\w+)", args[1] if len(args) > 1 else "")
    if not m:
      return [f"{command}: no //package:target after `bazel {args[0]}`"]
    script = f"{m.group(1)}/{m.group(2)}.py"
    rest = args[args.index("--") + 1:] if "--" in args else []
    return _script_problems(script, rest)
  if tool == "pip":
    extras = set(re.findall(r"\.\[(\w+)\]", " ".join(args)))
    return [f"pip install .[{e}]: pyproject.toml has no extra [{e}]"
            for e in sorted(extras - _extras())]
  if tool == "tensorboard":
    return []  # An outside tool; its --logdir is the binary's default root.
  return [f"{command!r}: tests/docs_test.py does not know how to check "
          f"`{tool}`; add a rule to command_problems()"]


def shell_commands(code: str) -> List[str]:
  """The commands of a shell block (continuation lines joined)."""
  return [c for c in code.replace("\\\n", " ").splitlines() if c.strip()]


# -- the tests ------------------------------------------------------------------


class ApiCoverageTest(absltest.TestCase):

  def test_every_public_name_is_documented(self):
    self.assertEqual(pax_docs.api_problems(), [])

  def test_a_missing_name_and_a_bare_constant_are_caught(self):
    api = self.create_tempdir()
    for name in os.listdir(pax_docs.API):
      with open(os.path.join(pax_docs.API, name), encoding="utf-8") as f:
        text = f.read()
      text = text.replace(".. autofunction:: pax_haiku.grad\n", "")
      text = re.sub(r"(:value: \"data\"\n)\n(   .*\n)+", r"\1", text)
      api.create_file(name, text)
    problems = pax_docs.api_problems(api.full_path)
    self.assertLen(problems, 2, problems)
    self.assertIn("pax_haiku.grad is public but on no API page", problems[0])
    self.assertIn("pax_haiku.sharding.DATA_AXIS is a constant with no "
                  "description", problems[1])

  def test_an_undocumented_method_is_caught(self):
    import pax_haiku as pax  # pylint: disable=g-import-not-at-top

    class Bare(pax.Module):

      def forward(self):
        return 1

    Bare.__module__ = "pax_haiku.fake"
    self.assertEqual(pax_docs._undocumented_members(Bare),  # pylint: disable=protected-access
                     ["pax_haiku.fake.ApiCoverageTest.test_an_undocumented_"
                      "method_is_caught.<locals>.Bare.forward"])

  def test_pax_docs_examples(self):
    result = doctest.testmod(pax_docs, optionflags=doctest.ELLIPSIS)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0)


class GuideCodeTest(parameterized.TestCase):

  def test_every_page_is_in_a_toctree(self):
    with open(os.path.join(pax_docs.DOCS, "index.md"), encoding="utf-8") as f:
      index = f.read()
    listed = set(re.findall(r"^(\w+)$", index, re.M))
    pages = {n[:-3] for n in os.listdir(pax_docs.DOCS)
             if n.endswith(".md") and n != "index.md"}
    self.assertEqual(sorted(pages - listed), [])

  def test_the_guides_have_code(self):
    files = _guides()
    for expected in ("README.md", "docs/quickstart.md", "docs/training.md",
                     "docs/haiku_interop.md", "BENCHMARKS.md"):
      self.assertIn(expected, files)
    blocks = [b for f in files for b in pax_docs.code_blocks(
        os.path.join(ROOT, f))]
    self.assertGreater(sum(b.language == "python" for b in blocks), 15)
    self.assertGreater(sum(b.language in _SHELL for b in blocks), 10)

  def test_blocks_in_list_items_are_found(self):
    page = self.create_tempfile("page.md", "1. Step:\n\n   ```python\n"
                                "   x = 1\n   if x:\n     y = 2\n   ```\n")
    blocks = pax_docs.code_blocks(page.full_path)
    self.assertEqual([(b.line, b.language, b.code) for b in blocks],
                     [(3, "python", "x = 1\nif x:\n  y = 2\n")])

  @parameterized.named_parameters(*_named_guides())
  def test_python_blocks_run(self, guide):
    blocks = [b for b in pax_docs.code_blocks(os.path.join(ROOT, guide))
              if b.language == "python"]
    import pax_haiku as pax  # pylint: disable=g-import-not-at-top
    pax.seed_rng_key(0)
    with _in_tempdir():
      namespace = {"__name__": "__docs__"}
      if guide in _SETUP:
        _SETUP[guide](namespace)
      for block in blocks:
        try:
          exec(compile(block.code, block.where(), "exec"), namespace)  # pylint: disable=exec-used
        except Exception as e:  # pylint: disable=broad-except
          self.fail(f"the block at {block.where()} failed: "
                    f"{type(e).__name__}: {e}")

  @parameterized.named_parameters(*_named_guides())
  def test_shell_commands_name_what_exists(self, guide):
    problems = []
    for block in pax_docs.code_blocks(os.path.join(ROOT, guide)):
      if block.language in _SHELL:
        for command in shell_commands(block.code):
          problems += [f"{block.where()}: {p}"
                       for p in command_problems(command)]
    self.assertEqual(problems, [])

  def test_the_command_check_catches_mistakes(self):
    self.assertEqual(command_problems(
        "python3 tools/train.py --config=configs/smoke.py --workdir=/tmp/x "
        "--config.num_steps=5 --config.model_config.hidden_sizes=(8,)"), [])
    self.assertEqual(command_problems(
        "python3 tools/train.py --config=configs/smoke.py --workdir=/tmp/x "
        "--config.lerning_rate=0.1 --wrokdir=/tmp/y"), [
            "--config.lerning_rate=0.1: the config has no key "
            "'lerning_rate'",
            "--wrokdir=/tmp/y: tools/train.py defines no flag --wrokdir"])
    self.assertEqual(command_problems(
        "bazel run //tools:trian -- --workdir=/tmp/x"),
                     ["tools/trian.py: no such file"])
    self.assertEqual(command_problems("bash tools/nothing.sh"),
                     ["tools/nothing.sh: no such file"])
    self.assertEqual(command_problems("pip install '.[doc]'"),
                     ["pip install .[doc]: pyproject.toml has no extra [doc]"])
    self.assertIn("add a rule", command_problems("make docs")[0])


_NO_SPHINX = r"^error: Sphinx, myst-parser or furo .* is not installed for "
_FIX = (r"Fix: (bash tools/setup\.sh) \(.*\), then rerun "
        r"(bash tools/docs\.sh)\.")
# What test_docs_sh_without_sphinx_says_what_to_run_then_builds reads of the
# site it built (the other test then changes the site).
_BUILT_PAGES = ("index.html", "quickstart.html", "api/sharding.html",
                "api/layers.html", "training.html")


class SphinxBuildTest(absltest.TestCase):
  """`bash tools/docs.sh` on a copy of the site. The users' build, fresh,
  runs once (`_fix_then_build`), for both tests; the broken reference is
  then a second build of that site that rereads only the changed page."""

  site: str
  env: Dict[str, str]
  _built: Dict[str, Any] = {}

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # A copy of what tools/docs.sh reads: under Bazel the files are
    # symlinks into the source tree, which MyST would resolve to paths
    # outside the site. pax_haiku and tools/ come from PYTHONPATH.
    cls._tmp = tempfile.TemporaryDirectory(
        dir=absltest.get_default_test_tmpdir())
    cls.site = os.path.join(cls._tmp.name, "site")
    shutil.copytree(os.path.join(ROOT, "docs"),
                    os.path.join(cls.site, "docs"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.makedirs(os.path.join(cls.site, "tools"))
    for name in ("README.md", "BENCHMARKS.md", "requirements.txt",
                 "tools/docs.sh", "tools/setup.sh"):
      shutil.copy(os.path.join(ROOT, name), os.path.join(cls.site, name))
    cls.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + os.environ.get("PYTHONPATH", "").split(os.pathsep)),
                   DOCS_OUT=os.path.join(cls.site, "html"))
    cls._built = {}

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  @classmethod
  def _run(cls, command, **env):
    return subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=600,
        check=False, cwd=cls.site, env=dict(cls.env, **env))

  @classmethod
  def _fix_then_build(cls) -> Dict[str, Any]:
    """tools/docs.sh on an interpreter without Sphinx, then the Fix that it
    prints, run: the processes, and the text of the `_BUILT_PAGES` that
    exist. Runs once; a step is None when the one before it went wrong."""
    if cls._built:
      return cls._built
    built = cls._built
    # An interpreter on which `import sphinx` fails.
    hide = os.path.join(cls._tmp.name, "hide")
    os.makedirs(hide)
    with open(os.path.join(hide, "sphinx.py"), "w", encoding="utf-8") as f:
      f.write("raise ImportError('hidden by the test')")
    fake = os.path.join(hide, "python3")
    with open(fake, "w", encoding="utf-8") as f:
      f.write(f"#!/bin/sh\nPYTHONPATH={hide}:$PYTHONPATH "
              f"exec {sys.executable} \"$@\"\n")
    os.chmod(fake, 0o755)
    built["no_sphinx"] = cls._run("bash tools/docs.sh", PYTHON=fake)
    lines = built["no_sphinx"].stderr.strip().splitlines()
    built["fix"] = re.fullmatch(_FIX, lines[1]) if len(lines) > 1 else None
    built["setup"] = built["build"] = None
    if built["fix"]:
      # The fix, on the real interpreter: setup.sh finds the pins installed
      # (SKIP_EDITABLE: its editable-install step would point this
      # machine's shared interpreter at the test's copy; SKIP_BAZEL: no
      # Bazel inside a test). Then the site builds, warnings as errors.
      built["setup"] = cls._run(built["fix"].group(1), PYTHON=sys.executable,
                                SKIP_EDITABLE="1", SKIP_BAZEL="1")
      if built["setup"].returncode == 0:
        built["build"] = cls._run(built["fix"].group(2),
                                  PYTHON=sys.executable)
    built["pages"] = {}
    for page in _BUILT_PAGES:
      path = os.path.join(cls.site, "html", page)
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          built["pages"][page] = f.read()
    return built

  def test_docs_sh_without_sphinx_says_what_to_run_then_builds(self):
    built = self._fix_then_build()
    proc = built["no_sphinx"]
    self.assertEqual(proc.returncode, 2, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    self.assertLen(lines, 2, proc.stderr)
    self.assertRegex(lines[0], _NO_SPHINX)
    self.assertIsNotNone(built["fix"], lines[1])
    setup = built["setup"]
    self.assertEqual(setup.returncode, 0, setup.stdout + setup.stderr)
    self.assertIn("all pins in requirements.txt are installed", setup.stdout)
    build = built["build"]
    self.assertEqual(build.returncode, 0, build.stderr[-5000:])
    pages = built["pages"]
    for page in ("index.html", "quickstart.html", "api/sharding.html"):
      self.assertIn(page, pages)
    layers = pages.get("api/layers.html", "")
    # autodoc rendered the docstrings (not reST source as Markdown text).
    self.assertIn('id="pax_haiku.Linear"', layers)
    self.assertNotIn(".. py:class::", layers)
    # {pax-config-keys} listed the schema's keys in the training guide.
    self.assertIn("--config.learning_rate=0.001",
                  pages.get("training.html", ""))

  def test_a_broken_reference_fails_the_build(self):
    # The site as it is builds (the test above checks that build): so what
    # fails below is the reference. The build that fails reuses that one's
    # environment (DOCS_REUSE_ENV): it reads, writes and checks
    # quickstart.md, the page changed, with the flags and conf.py of the
    # users' build.
    built = self._fix_then_build()
    self.assertIsNotNone(built["build"], "the site did not build")
    self.assertEqual(built["build"].returncode, 0, "the site did not build")
    quickstart = os.path.join(self.site, "docs", "quickstart.md")
    with open(quickstart, encoding="utf-8") as f:
      text = f.read()
    try:
      with open(quickstart, "a", encoding="utf-8") as f:
        f.write("\nSee {func}`pax_haiku.no_such_function`.\n")
      build = self._run("bash tools/docs.sh", PYTHON=sys.executable,
                        DOCS_REUSE_ENV="1")
    finally:
      with open(quickstart, "w", encoding="utf-8") as f:
        f.write(text)
    self.assertNotEqual(build.returncode, 0)
    self.assertIn("pax_haiku.no_such_function", build.stderr)
    # ...and nothing else.
    warnings = [l for l in build.stderr.splitlines()
                if re.search(r"\b(WARNING|ERROR)\b", l)]
    self.assertNotEmpty(warnings, build.stderr)
    for warning in warnings:
      self.assertIn("pax_haiku.no_such_function", warning)


if __name__ == "__main__":
  quick_exit.main()
