"""The documentation site's checks: API coverage and the guides' code blocks.

Used twice: as a Sphinx extension by docs/conf.py (every problem is a
warning, and tools/docs.sh builds with warnings as errors) and, without
Sphinx, by tests/docs_test.py, which also runs the code blocks.

* `api_problems()`: every public name of pax_haiku (the `__all__` of each
  module in `PUBLIC_MODULES`) must be the target of a directive on an API
  page (`docs/api/*.rst`), e.g. `.. autoclass::`; a class or function
  must have its own docstring, and a constant (which cannot have one) a
  `.. py:data::` directive with a description.
* `code_blocks(path)`: the fenced code blocks of a Markdown page, and
  `guide_files()`: the pages whose blocks run (every page of docs/ outside
  docs/api/, plus the files they `{include}`).
* As an extension it also keeps Python's cyclic garbage collector off what
  the build holds until its end (`_freeze_live_objects`).

>>> problems = api_problems()
>>> problems
[]
>>> [b.language for b in code_blocks(os.path.join(DOCS, "quickstart.md"))][:1]
['python']
"""

import dataclasses
import gc
import importlib
import os
import re
import textwrap
from typing import Dict, List, Set

DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(DOCS)
API = os.path.join(DOCS, "api")

# The modules whose `__all__` is the public API. Submodules listed in an
# `__all__` (pax_haiku.nets, ...) are documented by `.. automodule::`.
PUBLIC_MODULES = (
    "pax_haiku",
    "pax_haiku.nets",
    "pax_haiku.sharding",
    "pax_haiku.utils",
    "pax_haiku.experimental",
    "pax_haiku.experimental.graph",
)

# A MyST directive block: ```{name} argument ... ``` (3 or more backticks).
_DIRECTIVE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>[^\n]*)\n"
    r"(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
# A reST directive and its indented options and body.
_RST_DIRECTIVE = re.compile(
    r"^\.\. (?P<name>[\w:-]+):: *(?P<arg>[^\n]*)\n"
    r"(?P<body>(?:(?:[ \t]+[^\n]*)?\n)*)", re.M)
# Any fenced code block: ```lang ... ```, also indented (in a list item).
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)"
    r"^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S)


@dataclasses.dataclass(frozen=True)
class CodeBlock:
  """One fenced block of a Markdown file: its language, first line, text."""
  path: str
  line: int
  language: str
  code: str

  def where(self) -> str:
    return f"{os.path.relpath(self.path, ROOT)}:{self.line}"


def public_names() -> List[str]:
  """Every public name, fully qualified, e.g. `pax_haiku.nets.MLP`."""
  names = []
  for module_name in PUBLIC_MODULES:
    module = importlib.import_module(module_name)
    names += [f"{module_name}.{n}" for n in module.__all__]
  return names


def _resolve(qualname: str):
  module_name, _, attr = qualname.rpartition(".")
  return getattr(importlib.import_module(module_name), attr)


def _undocumented_members(cls: type) -> List[str]:
  """Public methods and properties that pax_haiku defines on `cls` (or on a
  pax_haiku base class) without a docstring; autodoc would leave them out."""
  missing = []
  for klass in cls.__mro__:
    if not klass.__module__.startswith("pax_haiku"):
      continue
    for name, value in vars(klass).items():
      if name.startswith("_"):
        continue
      func = value.fget if isinstance(value, property) else getattr(
          value, "__func__", value)
      if not (callable(func) or isinstance(value, property)):
        continue
      if not (getattr(func, "__doc__", None) or "").strip():
        missing.append(f"{klass.__module__}.{klass.__qualname__}.{name}")
  return missing


def _directive_body(body: str) -> str:
  """A directive's text without its `:option:` lines."""
  lines = [l for l in body.splitlines() if not re.match(r"\s*:[\w-]+:", l)]
  return "\n".join(lines).strip()


def documented_targets(api_dir: str = API) -> Dict[str, str]:
  """`{qualified name: description}` of every directive on the API pages.

  The pages are reStructuredText (autodoc's directives emit reST, which MyST
  pages would have to wrap in `{eval-rst}` anyway): `.. autoclass:: NAME`,
  or `.. py:data:: NAME` with a `:module:` option and an indented body.
  """
  targets = {}
  for name in sorted(os.listdir(api_dir)):
    if not name.endswith(".rst"):
      continue
    with open(os.path.join(api_dir, name), encoding="utf-8") as f:
      text = f.read()
    for m in _RST_DIRECTIVE.finditer(text):
      kind, target = m.group("name"), m.group("arg").split("(")[0].strip()
      if not (kind.startswith(("auto", "py:")) and target):
        continue
      body = m.group("body")
      module = re.search(r"^\s+:module:[ \t]*(\S+)", body, re.M)
      if kind.startswith("py:") and module:
        target = f"{module.group(1)}.{target}"
      targets[target] = _directive_body(body)
  return targets


def api_problems(api_dir: str = API) -> List[str]:
  """What keeps the API reference from covering every public name."""
  targets = documented_targets(api_dir)
  problems = []
  for qualname in public_names():
    obj = _resolve(qualname)
    if qualname not in targets:
      problems.append(
          f"{qualname} is public but on no API page: add a directive for it "
          f"(e.g. `.. autofunction:: {qualname}`) to a page in docs/api/.")
      continue
    if callable(obj) or hasattr(obj, "__path__") or hasattr(obj, "__file__"):
      doc = getattr(obj, "__doc__", None)
      if not (doc and doc.strip()):
        problems.append(f"{qualname} has no docstring: write one (Google "
                        "style, with a >>> example) where it is defined.")
      if isinstance(obj, type):
        problems += [f"{m} (public, of {qualname}) has no docstring: write "
                     "one where it is defined."
                     for m in _undocumented_members(obj)]
    elif not targets[qualname]:
      problems.append(f"{qualname} is a constant with no description: write "
                      "one in the body of its `.. py:data::` directive.")
  return problems


def code_blocks(path: str) -> List[CodeBlock]:
  """The fenced code blocks of the Markdown file `path` (not directives)."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  blocks = []
  for m in _FENCE.finditer(text):
    info = m.group("info").strip()
    if info.startswith("{"):
      continue  # A MyST directive, not code.
    line = text.count("\n", 0, m.start()) + 1
    blocks.append(CodeBlock(path, line, info.split(" ")[0],
                            textwrap.dedent(m.group("body"))))
  return blocks


def included_files(path: str) -> List[str]:
  """The files that the page `path` pulls in with ```{include}```."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  return [os.path.normpath(os.path.join(os.path.dirname(path),
                                        m.group("arg").strip()))
          for m in _DIRECTIVE.finditer(text) if m.group("name") == "include"]


def guide_files() -> List[str]:
  """Every page of the site outside the API reference, and what it includes."""
  pages = sorted(os.path.join(DOCS, n) for n in os.listdir(DOCS)
                 if n.endswith(".md"))
  seen: Set[str] = set()
  out = []
  for page in pages:
    for path in [page] + included_files(page):
      if path not in seen:
        seen.add(path)
        out.append(path)
  return out


# A `code` span directly followed by a letter (`hk.Module`s): reST ends
# inline markup only before white space or punctuation, so the docstrings'
# Markdown-style plurals need an escaped space there.
_GLUED_CODE = re.compile(r"(`[^`\s][^`]*`)(?=\w)")


def _unglue_code(app, what, name, obj, options, lines) -> None:
  del app, what, name, obj, options  # Same for every docstring.
  lines[:] = [_GLUED_CODE.sub(r"\1\\ ", line) for line in lines]


def _public_bases(app, name, obj, options, bases) -> None:
  """Shows a class's public ancestors instead of private base classes."""
  del app, name, obj, options
  public = set()
  for qualname in public_names():
    value = _resolve(qualname)
    if isinstance(value, type):
      public.add(value)
  shown = []
  todo = list(bases)
  while todo:
    base = todo.pop(0)
    if base in public or not base.__module__.startswith("pax_haiku"):
      if base not in shown:
        shown.append(base)
    else:
      todo[:0] = list(base.__bases__)
  bases[:] = shown


def config_keys_text() -> str:
  """Every config key of the training binary, as `tools/train.py --help`
  lists them (from tools/trainer/config_schema.py)."""
  from tools.trainer import config_schema  # pylint: disable=g-import-not-at-top
  return "\n".join(line.strip() for line in config_schema.describe())


def _config_keys_directive():
  """`{pax-config-keys}`: the binary's config keys, generated at build time
  so that the training guide cannot fall behind the schema."""
  from docutils import nodes  # pylint: disable=g-import-not-at-top
  from sphinx.util.docutils import SphinxDirective  # pylint: disable=g-import-not-at-top

  class ConfigKeys(SphinxDirective):

    def run(self):
      text = config_keys_text()
      block = nodes.literal_block(text, text)
      block["language"] = "text"
      return [block]

  return ConfigKeys


def _check_api(app) -> None:
  from sphinx.util import logging  # pylint: disable=g-import-not-at-top
  logger = logging.getLogger("pax_docs")
  for problem in api_problems():
    logger.warning("API coverage: %s", problem)


def _freeze_live_objects(*args) -> None:
  """Takes every object alive now out of the cyclic GC's collections.

  Connected where what is alive stays alive to the end of the build: the
  imported modules (jax, pax_haiku, Sphinx: 165,000 tracked objects) once the
  builder is set up, the environment once every page is read, everything
  once the build is done. Each full collection would otherwise walk all of
  it again, as do the collections while the interpreter exits: a quarter
  of the build's CPU time (17 -> 12.5 s). A frozen object is still freed
  when its last reference goes (only cycles wait for the exit); the build's
  peak memory and its HTML, byte for byte, are the same.

  Args:
    *args: the event's arguments (unused).
  """
  del args
  gc.freeze()


def setup(app):
  """Sphinx entry point: the API coverage check runs before reading pages;
  docstrings get their code spans unglued and classes their public bases;
  the `{pax-config-keys}` directive lists the binary's config keys; the
  garbage collector leaves the long-lived objects alone."""
  app.connect("builder-inited", _check_api)
  # After the API check (priority 500), which imports pax_haiku.
  app.connect("builder-inited", _freeze_live_objects, priority=900)
  app.connect("env-updated", _freeze_live_objects, priority=900)
  app.connect("build-finished", _freeze_live_objects, priority=900)
  app.connect("autodoc-process-docstring", _unglue_code)
  app.connect("autodoc-process-bases", _public_bases)
  app.add_directive("pax-config-keys", _config_keys_directive())
  return {"parallel_read_safe": True, "parallel_write_safe": True}
