"""What a resumed run may change in its config, and the record of changes.

A workdir's `config.json` is the config its checkpoints were trained with.
On resume, `differences(saved, new)` lists the keys that differ:

* keys in `FREE_KEYS` only say how long to run, how often to log, evaluate
  and save, and where it runs; changing them is always allowed. The
  learning-rate schedule (warmup + cosine decay over `num_steps`) follows the
  new `num_steps` from the resumed step on, so raising `num_steps` stretches
  the rest of the decay (the rate at the resumed step changes; `describe`
  says by how much).
* any other key (optimizer, learning rate, schedule, batch size, model, data,
  seed) changes what is being optimized: `check` refuses unless the caller
  allows it, and then `record` keeps the old config as `config.<step>.json`
  beside the new `config.json`.

>>> saved = {"learning_rate": 1e-3, "num_steps": 100, "model_config": {"d": 8}}
>>> new = {"learning_rate": 1e-2, "num_steps": 200, "model_config": {"d": 8}}
>>> [d.key for d in differences(saved, new)]
['learning_rate', 'num_steps']
>>> [d.key for d in refused(differences(saved, new))]
['learning_rate']
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional

from pax_haiku._src import atomic_write
from tools.trainer import config_schema

__all__ = ["CONFIG_FILE", "ConfigChangeError", "Difference", "FREE_KEYS",
           "check", "differences", "load", "record", "refused"]

CONFIG_FILE = "config.json"
# Keys that change neither the model, the data nor the update rule.
FREE_KEYS = frozenset({
    "name", "num_steps", "eval_every", "checkpoint_every", "keep_checkpoints",
    "log_every", "eval_batches", "plot", "num_devices", "param_sharding",
    "steps_per_call", "scan_unroll", "compilation_cache", "divergence_factor",
    "divergence_window", "divergence_warmup"})


class ConfigChangeError(ValueError):
  """Resuming with a config that changes the optimization."""


@dataclasses.dataclass(frozen=True)
class Difference:
  """One key whose value differs (`MISSING` where a side lacks it)."""
  key: str
  saved: Any
  new: Any

  def __str__(self) -> str:
    return f"{self.key}: {self.saved!r} -> {self.new!r}"


MISSING = "<missing>"


def _flat(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      # JSON has no tuples: compare lists and tuples alike.
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


# Keys that configs saved by earlier versions lack: the value those runs had.
_IMPLIED = {
    "task": lambda saved: config_schema.DATASET_TASKS.get(saved.get("dataset")),
}


def differences(saved: Mapping[str, Any],
                new: Mapping[str, Any]) -> List[Difference]:
  """The keys (dotted for nested ones) whose values differ, sorted.

  >>> [str(d) for d in differences({"dataset": "chars"},
  ...                              {"dataset": "chars",
  ...                               "task": "language_model"})]
  []
  """
  saved = dict(saved)
  for key, implied in _IMPLIED.items():
    if key not in saved and implied(saved) is not None:
      saved[key] = implied(saved)
  a, b = _flat(saved), _flat(json.loads(json.dumps(new, default=str)))
  return [Difference(k, a.get(k, MISSING), b.get(k, MISSING))
          for k in sorted(set(a) | set(b)) if a.get(k, MISSING) !=
          b.get(k, MISSING)]


def refused(diffs: List[Difference]) -> List[Difference]:
  """The differences that change the optimization (not in `FREE_KEYS`)."""
  return [d for d in diffs if d.key.split(".")[0] not in FREE_KEYS]


def load(workdir: str) -> Optional[Dict[str, Any]]:
  """The workdir's `config.json`, or None if there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def check(saved: Optional[Mapping[str, Any]], new: Mapping[str, Any],
          step: int, allow_change: bool) -> List[Difference]:
  """The differences; raises `ConfigChangeError` for refused ones.

  Args:
    saved: the workdir's config (None: nothing to compare).
    new: this run's config as a dict.
    step: the step being resumed.
    allow_change: accept refused differences too.
  """
  if saved is None:
    return []
  diffs = differences(saved, new)
  bad = refused(diffs)
  if bad and not allow_change:
    raise ConfigChangeError(
        f"The checkpoint at step {step} was trained with another config; "
        "these keys change the optimization:\n  " +
        "\n  ".join(str(d) for d in bad) +
        "\nFix: rerun with the saved values (config.json in the workdir), "
        "use a new --workdir, or pass --allow_config_change to continue "
        "with the new values (the old config is kept as "
        f"config.{step}.json).")
  return diffs


def record(workdir: str, config: Mapping[str, Any], step: int,
           changed: bool) -> None:
  """Writes `config.json`; a `changed` one first keeps the old one."""
  path = os.path.join(workdir, CONFIG_FILE)
  if changed and os.path.exists(path):
    os.replace(path, os.path.join(workdir, f"config.{step}.json"))
  with atomic_write.atomic_file(path, "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2, default=str)
