"""The training config's keys, defaults, meanings and allowed values.

`KEYS` and `MODEL_KEYS` are the schema: every key the trainer reads, with
its default and a one-line meaning. `base_config()` is built from them, and
so is `describe()` (what `tools/train.py --help` prints), so neither can
drift from the other. Config files in `configs/` start from `base_config()`
and change values; `validate(config)` rejects unknown keys (naming the
nearest valid ones) and values out of range (naming the allowed range)
before any work starts.

>>> for line in describe()[6:8]:
...   print(line)
  --config.num_steps=2000                      optimizer steps in total (a multiple of steps_per_call)
  --config.steps_per_call=50                   steps per jitted call (one lax.scan); log/eval/checkpoint steps are multiples of it
"""

import dataclasses
import difflib
from typing import Any, Dict, List, Tuple

import ml_collections

from tools.trainer import registry

# The built-in datasets and models (aliases of import paths, see
# tools/trainer/registry.py): the task of each dataset, the dataset of each
# model.
DATASET_TASKS = {"digits": "classification", "chars": "language_model"}
DATASETS = tuple(DATASET_TASKS)
MODELS = {"mlp": "digits", "cnn": "digits", "lstm": "chars",
          "transformer": "chars"}
TASKS = ("classification", "language_model")
OPTIMIZERS = ("adam", "adamw", "sgd")
PARAM_SHARDINGS = ("replicated", "sharded")
# Keys that choose where the computation runs, not what it computes: a
# checkpoint resumes under other values without a "different config" warning.
LAYOUT_KEYS = ("num_devices", "param_sharding", "compilation_cache")
# Keys holding a sub-config rather than a value.
FREE_FORM_KEYS = ("model_config", "dataset_config")
# Keys that change nothing computed at all (not part of the config hash).
_UNHASHED_KEYS = LAYOUT_KEYS + ("name",)


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key: its name, default value and one-line meaning."""
  name: str
  default: Any
  help: str


KEYS: Tuple[Key, ...] = (
    Key("name", "", "run name: the curves' title (tools/train.py sets the "
        "config file's name)"),
    Key("dataset", "digits", "training data: 'digits' (UCI 8x8 digits), "
        "'chars' (Python sources, bytes) or your 'package.module:factory' "
        "returning (train, test) sources"),
    Key("dataset_config", None, "your dataset factory's own keys "
        "(free-form; empty for the built-in datasets)"),
    Key("task", "classification", "'classification' or 'language_model': "
        "the loss and metrics"),
    Key("model", "mlp", "model: 'mlp' or 'cnn' (digits), 'lstm' or "
        "'transformer' (chars), or your 'package.module:factory' returning "
        "a pax.Module"),
    Key("model_config", None, "the model's own keys (below); "
        "config_schema.with_model() sets a built-in model's defaults; "
        "free-form for your own factory"),
    Key("seed", 0, "seed of the parameters, dropout and data order (>= 0)"),
    Key("batch_size", 128, "global batch size, split evenly over the devices"),
    Key("num_steps", 2000, "optimizer steps in total (a multiple of "
        "steps_per_call)"),
    Key("steps_per_call", 50, "steps per jitted call (one lax.scan); "
        "log/eval/checkpoint steps are multiples of it"),
    # XLA:CPU runs convolutions inside a while loop ~20x slower than
    # unrolled (measured), so conv configs unroll fully.
    Key("scan_unroll", 1, "steps unrolled inside the scan (conv configs: "
        "steps_per_call)"),
    Key("optimizer", "adamw", "'adamw', 'adam' or 'sgd' (momentum 0.9)"),
    Key("learning_rate", 1e-3, "peak learning rate, in (0, 10]"),
    Key("warmup_steps", 100, "linear warmup steps, then cosine decay to 1% "
        "of learning_rate"),
    Key("weight_decay", 1e-4, "AdamW weight decay, in [0, 1)"),
    Key("grad_clip", 1.0, "clip gradients to this global norm (> 0)"),
    Key("eval_every", 500, "evaluate on the held-out data every N steps"),
    Key("checkpoint_every", 500, "write a checkpoint every N steps"),
    Key("keep_checkpoints", 3, "checkpoints kept (the newest)"),
    Key("log_every", 100, "write metrics (jsonl, TensorBoard, console) "
        "every N steps"),
    Key("seq_len", 128, "chars only: characters per training window"),
    Key("max_bytes", 0, "chars only: bytes of corpus to use (0 = all)"),
    Key("eval_batches", 0, "batches of batch_size test examples per "
        "evaluation (0 = the whole test set)"),
    Key("plot", True, "write <workdir>/curves.png at the end"),
    Key("compilation_cache", True, "keep compiled programs in JAX's "
        "persistent cache (tools/trainer/compile_cache.py) for fast restarts"),
    Key("divergence_factor", 10.0, "stop when a chunk's loss exceeds this "
        "x the running median of recent ones (0 = only stop on NaN/Inf)"),
    Key("divergence_window", 20, "chunks the divergence median covers"),
    Key("divergence_warmup", 5, "chunks before the divergence factor "
        "applies"),
    # docs/scaling.md.
    Key("num_devices", 0, "devices to split each batch over (0 = all "
        "devices of all processes)"),
    Key("param_sharding", "replicated", "'replicated' (a full copy per "
        "device) or 'sharded' (large leaves split, ZeRO/FSDP style)"),
)

MODEL_KEYS: Dict[str, Tuple[Key, ...]] = {
    "mlp": (Key("hidden_sizes", (256, 256), "hidden layer widths"),
            Key("dropout", 0.0, "dropout rate after each hidden layer")),
    "cnn": (Key("channels", (32, 64), "channels of the two 3x3 convolutions"),
            Key("hidden", 128, "width of the dense layer"),
            Key("dropout", 0.0, "dropout rate before the dense layers")),
    "lstm": (Key("embed_dim", 64, "byte embedding size"),
             Key("hidden_dim", 256, "LSTM state size")),
    "transformer": (Key("d_model", 128, "model width (divisible by "
                        "num_heads)"),
                    Key("num_heads", 4, "attention heads per layer"),
                    Key("num_layers", 4, "transformer blocks"),
                    Key("dropout", 0.0, "dropout rate")),
}

MODEL_CONFIG_KEYS = {model: {k.name: k.default for k in keys}
                     for model, keys in MODEL_KEYS.items()}


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with defaults."""
  c = ml_collections.ConfigDict()
  for key in KEYS:
    if key.name == "model_config":
      c.model_config = ml_collections.ConfigDict(
          dict(MODEL_CONFIG_KEYS[c.model]))
    elif key.name == "dataset_config":
      c.dataset_config = ml_collections.ConfigDict()
    else:
      setattr(c, key.name, key.default)
  return c


def describe() -> List[str]:
  """One line per config key: `--config.<key>=<default>` and its meaning."""
  lines = [f"  {f'--config.{k.name}={k.default!r}':<44} {k.help}"
           for k in KEYS if k.name not in FREE_FORM_KEYS]
  lines += [f"  {f'--config.{k.name}.KEY=VALUE':<44} {k.help}"
            for k in KEYS if k.name in FREE_FORM_KEYS]
  for model, keys in MODEL_KEYS.items():
    lines += [f"  {f'--config.model_config.{k.name}={k.default!r}':<44} "
              f"({model}) {k.help}" for k in keys]
  return lines


def nearest_keys(key: str, config: Any = None, n: int = 3) -> List[str]:
  """The valid keys closest to the (dotted) `key`, for "did you mean".

  Top-level keys come from the schema; `model_config.*` keys from `config`'s
  model (all models' keys if `config` is None).

  >>> nearest_keys("lerning_rate")
  ['learning_rate']
  >>> nearest_keys("steps")
  ['num_steps', 'warmup_steps', 'steps_per_call']
  """
  if config is not None and config.get("model") in MODEL_CONFIG_KEYS:
    model_keys = list(MODEL_CONFIG_KEYS[config.model])
  else:
    model_keys = sorted({k for keys in MODEL_CONFIG_KEYS.values()
                         for k in keys})
  valid = [k.name for k in KEYS if k.name not in FREE_FORM_KEYS]
  valid += [f"model_config.{k}" for k in model_keys]
  close = difflib.get_close_matches(key, valid, n=n, cutoff=0.5)
  # A bare suffix ("steps") matches keys that end in it ("num_steps").
  ends = [k for k in valid if k.split(".")[-1].endswith(key.split(".")[-1])]
  return list(dict.fromkeys(ends + close))[:n]


def with_model(config: ml_collections.ConfigDict,
               model: str) -> ml_collections.ConfigDict:
  """Sets the built-in `model`, its dataset, task and default `model_config`.

  Raises:
    ValueError: if `model` is not a built-in model.
  """
  if model not in MODELS:
    raise ValueError(f"with_model takes a built-in model "
                     f"({', '.join(MODELS)}), got {model!r}; for your own "
                     "factory set config.model = 'package.module:factory' "
                     "and config.model_config yourself.")
  config.model = model
  config.dataset = MODELS[model]
  config.task = DATASET_TASKS[config.dataset]
  config.model_config = ml_collections.ConfigDict(dict(MODEL_CONFIG_KEYS[model]))
  return config


def _unknown(keys, valid, where: str) -> List[str]:
  errors = []
  for key in keys:
    if key not in valid:
      close = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
      errors.append(
          f"unknown config key `{where}{key}`"
          + (f" (did you mean {', '.join(f'`{where}{c}`' for c in close)}?)"
             if close else "")
          + f"; valid keys: {', '.join(sorted(valid))}")
  return errors


def validate(config: Any) -> None:
  """Raises ValueError listing every problem with `config`."""
  base = base_config()
  errors = _unknown(config.keys(), base.keys(), "")
  if config.get("model") in MODELS:
    errors += _unknown(config.model_config.keys(),
                       MODEL_CONFIG_KEYS[config.model], "model_config.")

  def check(cond: bool, msg: str):
    if not cond:
      errors.append(msg)

  def positive_int(name: str):
    v = config.get(name)
    check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
          f"`{name}` must be an integer >= 1, got {v!r}")

  if not errors:
    check(config.model in MODELS or registry.is_import_path(config.model),
          f"`model` must be one of {sorted(MODELS)} or an import path "
          f"'package.module:factory', got {config.model!r}")
    check(config.dataset in DATASETS or registry.is_import_path(
        config.dataset),
          f"`dataset` must be one of {list(DATASETS)} or an import path "
          f"'package.module:factory', got {config.dataset!r}")
    check(config.task in TASKS,
          f"`task` must be one of {list(TASKS)}, got {config.task!r}")
    if config.model in MODELS and config.dataset in DATASETS:
      check(MODELS[config.model] == config.dataset,
            f"model {config.model!r} trains on dataset "
            f"{MODELS[config.model]!r}, not {config.dataset!r}")
    if config.dataset in DATASET_TASKS and config.task in TASKS:
      want = DATASET_TASKS[config.dataset]
      check(config.task == want,
            f"dataset {config.dataset!r} is a {want} dataset, not "
            f"{config.task!r} (set --config.task={want})")
    check(config.optimizer in OPTIMIZERS,
          f"`optimizer` must be one of {list(OPTIMIZERS)}, got "
          f"{config.optimizer!r}")
    for name in ("batch_size", "num_steps", "steps_per_call", "scan_unroll",
                 "eval_every",
                 "checkpoint_every", "keep_checkpoints", "log_every",
                 "seq_len", "divergence_window"):
      positive_int(name)
    check(isinstance(config.divergence_warmup, int) and
          config.divergence_warmup >= 0,
          "`divergence_warmup` must be an integer >= 0, got "
          f"{config.divergence_warmup!r}")
    check(isinstance(config.divergence_factor, (int, float)) and (
        config.divergence_factor == 0 or config.divergence_factor > 1),
          "`divergence_factor` must be 0 (off) or > 1, got "
          f"{config.divergence_factor!r}")
    check(isinstance(config.name, str),
          f"`name` must be a string, got {config.name!r}")
    check(isinstance(config.seed, int) and config.seed >= 0,
          f"`seed` must be an integer >= 0, got {config.seed!r}")
    check(isinstance(config.learning_rate, float) and
          0.0 < config.learning_rate <= 10.0,
          f"`learning_rate` must be a float in (0, 10], got "
          f"{config.learning_rate!r}")
    check(0.0 <= config.weight_decay < 1.0,
          f"`weight_decay` must be in [0, 1), got {config.weight_decay!r}")
    check(config.grad_clip > 0.0,
          f"`grad_clip` must be > 0, got {config.grad_clip!r}")
    check(isinstance(config.warmup_steps, int) and config.warmup_steps >= 0,
          f"`warmup_steps` must be an integer >= 0, got "
          f"{config.warmup_steps!r}")
    check(isinstance(config.eval_batches, int) and config.eval_batches >= 0,
          "`eval_batches` must be an integer >= 0 (0 = the whole test set), "
          f"got {config.eval_batches!r}")
    check(isinstance(config.max_bytes, int) and config.max_bytes >= 0,
          f"`max_bytes` must be an integer >= 0, got {config.max_bytes!r}")
    check(isinstance(config.num_devices, int) and
          not isinstance(config.num_devices, bool) and config.num_devices >= 0,
          "`num_devices` must be an integer >= 0 (0 = all devices), got "
          f"{config.num_devices!r}")
    check(config.param_sharding in PARAM_SHARDINGS,
          f"`param_sharding` must be one of {list(PARAM_SHARDINGS)}, got "
          f"{config.param_sharding!r}")
    if not errors:
      k = config.steps_per_call
      for name in ("num_steps", "eval_every", "checkpoint_every", "log_every"):
        check(config[name] % k == 0,
              f"`{name}` ({config[name]}) must be a multiple of "
              f"`steps_per_call` ({k}): the loop runs {k} steps per call")
      if config.model in MODELS:
        dropout = config.model_config.get("dropout", 0.0)
        check(0.0 <= dropout < 1.0, "`model_config.dropout` must be in "
              f"[0, 1), got {dropout!r}")
  if errors:
    raise ValueError("Invalid training config:\n  - " + "\n  - ".join(errors))


def to_dict(config: Any) -> Dict[str, Any]:
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def hashed_dict(config: Any) -> Dict[str, Any]:
  """`to_dict(config)` without `LAYOUT_KEYS` and `name`: what a config hash
  covers."""
  return {k: v for k, v in to_dict(config).items() if k not in _UNHASHED_KEYS}
