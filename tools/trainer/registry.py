"""Models and datasets by import path: `module.path:factory`.

`config.model` and `config.dataset` name a factory as `"package.module:name"`
(the module is imported, `name` looked up in it). The binary's own models and
datasets are aliases for such paths, looked up in `MODEL_ALIASES` and
`DATASET_ALIASES` and then resolved the same way:

* a model factory is called as `factory(config)` and returns a `pax.Module`
  (its own keys are in `config.model_config`);
* a dataset factory is called as `factory(config)` and returns
  `(train, test)`: two random-access sources (`len(source)` and
  `source[i]`, as grain's `RandomAccessDataSource`) of `(inputs, label)`
  examples.

>>> resolve("mlp", "model").__name__
'mlp'
>>> resolve("tools.trainer.datasets:digits", "dataset").__module__
'tools.trainer.datasets'
>>> resolve("no_such_module_xyz:build", "model")
Traceback (most recent call last):
...
ValueError: config.model='no_such_module_xyz:build': cannot import module 'no_such_module_xyz' (No module named 'no_such_module_xyz').
Fix: run from the directory that holds `no_such_module_xyz` (or its package), or add that directory to PYTHONPATH.
"""

import difflib
import importlib
import inspect
import re
from typing import Callable, Dict, List

__all__ = ["DATASET_ALIASES", "FactoryResultError", "MODEL_ALIASES",
           "is_import_path", "resolve"]

#: Built-in model names and the factories they stand for.
MODEL_ALIASES: Dict[str, str] = {
    "mlp": "tools.trainer.models:mlp",
    "cnn": "tools.trainer.models:cnn",
    "lstm": "tools.trainer.models:lstm",
    "transformer": "tools.trainer.models:transformer",
}

#: Built-in dataset names and the factories they stand for.
DATASET_ALIASES: Dict[str, str] = {
    "digits": "tools.trainer.datasets:digits",
    "chars": "tools.trainer.datasets:chars",
}

class FactoryResultError(TypeError):
  """A model or dataset factory returned something of the wrong type."""


_ALIASES = {"model": MODEL_ALIASES, "dataset": DATASET_ALIASES}
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def is_import_path(spec: str) -> bool:
  """Whether `spec` has the form `package.module:name`."""
  return isinstance(spec, str) and bool(_IMPORT_PATH.fullmatch(spec))


def _usage(kind: str) -> str:
  names = ", ".join(repr(n) for n in _ALIASES[kind])
  return (f"a built-in {kind} ({names}) or an import path "
          f"'package.module:factory'")


def resolve(spec: str, kind: str) -> Callable[..., object]:
  """The factory that `config.<kind> = spec` names.

  Args:
    spec: an alias from `MODEL_ALIASES`/`DATASET_ALIASES`, or
      `"package.module:factory"`.
    kind: `"model"` or `"dataset"`.

  Raises:
    ValueError: if `spec` is neither an alias nor an import path, its module
      cannot be imported, or it has no callable of that name.
  """
  if kind not in _ALIASES:
    raise ValueError(f"kind must be 'model' or 'dataset', got {kind!r}")
  key = f"config.{kind}={spec!r}"
  aliases = _ALIASES[kind]
  path = aliases.get(spec, spec) if isinstance(spec, str) else spec
  if not is_import_path(path):
    close = difflib.get_close_matches(str(spec), list(aliases), n=1)
    hint = (f"--config.{kind}={close[0]}" if close else
            f"--config.{kind}=my_package.my_module:build_{kind}")
    raise ValueError(f"{key} is not {_usage(kind)}.\nFix: e.g. `{hint}`")
  module_name, attr = path.split(":")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    missing = e.name or module_name
    if not module_name.startswith(missing.split(".")[0]) and (
        missing != module_name):
      # The module exists but one of its own imports is missing.
      raise ValueError(
          f"{key}: importing module {module_name!r} failed: {e}.\nFix: "
          f"install `{missing.split('.')[0]}` or remove that import from "
          f"{module_name!r}.") from e
    top = module_name.split(".")[0]
    raise ValueError(
        f"{key}: cannot import module {module_name!r} ({e}).\nFix: run from "
        f"the directory that holds `{top}` (or its package), or add that "
        "directory to PYTHONPATH.") from e
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"{key}: importing module {module_name!r} raised "
        f"{type(e).__name__}: {e}") from e
  factory = getattr(module, attr, None)
  if factory is None or not callable(factory):
    found = _callables(module)
    close = difflib.get_close_matches(attr, found, n=1)
    hint = (f"`--config.{kind}={module_name}:{close[0]}`" if close else
            f"define `def {attr}(config): ...` in {module.__file__}")
    what = "has no attribute" if factory is None else "has a non-callable"
    raise ValueError(
        f"{key}: module {module_name!r} {what} {attr!r} (its functions: "
        f"{', '.join(found) or 'none'}).\nFix: {hint}")
  return factory


def _callables(module) -> List[str]:
  return sorted(name for name, value in vars(module).items()
                if not name.startswith("_") and (
                    inspect.isfunction(value) or inspect.isclass(value))
                and getattr(value, "__module__", None) == module.__name__)
