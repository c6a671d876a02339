"""A pytest plugin that serves `import pax` / `import opax` from pax_haiku.

Loaded by `tools/pax_compat/run.sh` with `pytest -p pax_alias_plugin` so that
PAX's own test files run unchanged against pax_haiku:

- `pax` and every `pax.<sub>` module resolve to `pax_haiku` and
  `pax_haiku.<sub>` (an import hook: `import pax.experimental.graph` gives
  `pax_haiku.experimental.graph`);
- `opax` resolves to a small shim over optax (`opax.adam(lr)(params)` is
  `pax.from_optax(optax.adam(lr))(params)`, `opax.apply_gradients(model,
  optimizer, grads)` is `optimizer.step(model, grads)`).

At the end of the session the plugin writes one line per failed test and a
last line `N passed, M failed` (the file named by `PAX_COMPAT_REPORT`, or
stdout).
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys
import types


class _AliasLoader(importlib.abc.Loader):

  def __init__(self, target: str):
    self._target = target

  def create_module(self, spec):
    return importlib.import_module(self._target)

  def exec_module(self, module):
    del module  # Already executed by `import_module`.


class _AliasFinder(importlib.abc.MetaPathFinder):
  """Maps `alias[.sub]` to `target[.sub]`."""

  def __init__(self, alias: str, target: str):
    self._alias = alias
    self._target = target

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname != self._alias and not fullname.startswith(self._alias + "."):
      return None
    real = self._target + fullname[len(self._alias):]
    try:
      if importlib.util.find_spec(real) is None:
        return None
    except ModuleNotFoundError:
      return None
    return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


def _make_opax() -> types.ModuleType:
  """An `opax` module: PAX's optimizer library expressed with optax."""
  import optax  # pylint: disable=import-outside-toplevel
  import pax_haiku  # pylint: disable=import-outside-toplevel

  opax = types.ModuleType("opax")
  opax.__doc__ = "opax shim over optax (pax_haiku compatibility runner)."

  def _wrap(name, make):
    def factory(*args, **kwargs):
      tx = make(*args, **kwargs)

      class _Init:
        """`opax.adam(lr)` is called on params; `.init(params)` works too."""

        def __call__(self, params):
          return pax_haiku.from_optax(tx)(params)

        init = __call__
        update = tx.update

      return _Init()
    factory.__name__ = name
    return factory

  opax.adam = _wrap("adam", lambda learning_rate=1e-4, b1=0.9, b2=0.999,
                    eps=1e-8, **kw: optax.adam(learning_rate, b1, b2, eps,
                                               **kw))
  opax.adamw = _wrap("adamw", lambda learning_rate=1e-4, b1=0.9, b2=0.999,
                     eps=1e-8, weight_decay=1e-4, **kw: optax.adamw(
                         learning_rate, b1, b2, eps, weight_decay=weight_decay,
                         **kw))
  opax.sgd = _wrap("sgd", lambda learning_rate=1e-2, momentum=0.9, **kw:
                   optax.sgd(learning_rate, momentum=momentum, **kw))

  def chain(*txs):
    raise NotImplementedError(
        "opax.chain is not mapped by the compatibility runner.")
  opax.chain = chain
  opax.clip_by_global_norm = optax.clip_by_global_norm
  opax.GradientTransformation = pax_haiku.Optimizer

  def apply_gradients(model, optimizer, grads, all_finite=None):
    if all_finite is not None:
      raise NotImplementedError("opax.apply_gradients(all_finite=...)")
    return optimizer.step(model, grads)

  opax.apply_gradients = apply_gradients
  return opax


def install() -> None:
  sys.meta_path.insert(0, _AliasFinder("pax", "pax_haiku"))
  for name in [n for n in sys.modules if n == "pax" or n.startswith("pax.")]:
    del sys.modules[name]
  sys.modules["opax"] = _make_opax()


install()


# ----------------------------------------------------------------------------
# Reporting.
# ----------------------------------------------------------------------------

_RESULTS = {}  # nodeid -> (outcome, reason)
_ROOT = []  # The rootdir (PAX's checkout).


def pytest_configure(config):
  _ROOT.append(config.rootpath)


def _reason(report) -> str:
  crash = getattr(report.longrepr, "reprcrash", None)
  if crash is not None:
    text = crash.message
  else:
    text = str(report.longrepr)
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
  errors = [l[1:].strip() for l in lines if l.startswith("E ")]
  line = errors[-1] if errors else (lines[0] if lines else "?")
  return line[:300]


def pytest_runtest_logreport(report):
  if report.when == "call" or report.outcome != "passed":
    nodeid = report.nodeid
    if report.outcome == "passed":
      _RESULTS.setdefault(nodeid, ("passed", ""))
    elif report.outcome == "skipped":
      _RESULTS.setdefault(nodeid, ("skipped", ""))
    else:
      where = "" if report.when == "call" else f"[{report.when}] "
      _RESULTS[nodeid] = ("failed", where + _reason(report))


def _test_names(path: str):
  """Names of the test functions in a file that failed to import."""
  import ast  # pylint: disable=import-outside-toplevel
  try:
    with open(path) as f:
      tree = ast.parse(f.read())
  except (OSError, SyntaxError):
    return []
  names = {}
  for node in tree.body:
    if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and
        node.name.startswith("test")):
      names[node.name] = None
  return list(names)


def pytest_collectreport(report):
  if report.outcome != "failed":
    return
  reason = "[collection] " + _reason(report)
  path = os.path.join(str(_ROOT[0]), report.nodeid) if _ROOT else ""
  names = _test_names(path) if path.endswith(".py") else []
  if not names:
    _RESULTS[report.nodeid] = ("failed", reason)
  for name in names:
    _RESULTS[f"{report.nodeid}::{name}"] = ("failed", reason)


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  failed = sorted((k, r) for k, (o, r) in _RESULTS.items() if o == "failed")
  passed = sum(1 for o, _ in _RESULTS.values() if o == "passed")
  lines = [f"FAILED {k}: {r}" for k, r in failed]
  skipped = sum(1 for o, _ in _RESULTS.values() if o == "skipped")
  if skipped:
    lines.append(f"({skipped} skipped)")
  lines.append(f"{passed} passed, {len(failed)} failed")
  path = os.environ.get("PAX_COMPAT_REPORT")
  text = "\n".join(lines) + "\n"
  if path:
    with open(path, "w") as f:
      f.write(text)
  else:
    sys.stdout.write(text)
