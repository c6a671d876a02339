"""The training config's keys, defaults and allowed values.

Config files in `configs/` start from `base_config()` and change values;
`validate(config)` rejects unknown keys (listing the valid ones) and values
out of range (naming the allowed range) before any work starts.
"""

from typing import Any, Dict, List

import ml_collections

DATASETS = ("digits", "chars")
MODELS = {"mlp": "digits", "cnn": "digits", "lstm": "chars",
          "transformer": "chars"}
OPTIMIZERS = ("adam", "adamw", "sgd")
PARAM_SHARDINGS = ("replicated", "sharded")
# Keys that choose where the computation runs, not what it computes: a
# checkpoint resumes under other values without a "different config" warning.
LAYOUT_KEYS = ("num_devices", "param_sharding", "compilation_cache")

MODEL_CONFIG_KEYS = {
    "mlp": {"hidden_sizes": (256, 256), "dropout": 0.0},
    "cnn": {"channels": (32, 64), "hidden": 128, "dropout": 0.0},
    "lstm": {"embed_dim": 64, "hidden_dim": 256},
    "transformer": {"d_model": 128, "num_heads": 4, "num_layers": 4,
                    "dropout": 0.0},
}


def base_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with defaults."""
  c = ml_collections.ConfigDict()
  c.dataset = "digits"
  c.model = "mlp"
  c.model_config = ml_collections.ConfigDict(dict(MODEL_CONFIG_KEYS["mlp"]))
  c.seed = 0
  c.batch_size = 128
  c.num_steps = 2000
  c.steps_per_call = 50
  # Steps unrolled inside the scan: XLA:CPU runs convolutions inside a while
  # loop ~20x slower than unrolled (measured), so conv configs unroll fully.
  c.scan_unroll = 1
  c.optimizer = "adamw"
  c.learning_rate = 1e-3
  c.warmup_steps = 100
  c.weight_decay = 1e-4
  c.grad_clip = 1.0
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.log_every = 100
  c.seq_len = 128  # chars only
  c.max_bytes = 0  # chars only: 0 = whole corpus
  c.eval_batches = 8  # chars only: held-out windows = eval_batches*batch_size
  c.plot = True
  # Data parallelism (docs/scaling.md). `batch_size` is the global batch,
  # split evenly over the devices, so results do not depend on their number.
  c.num_devices = 0  # 0 = all devices (of every process in a multi-host job)
  # "replicated": a full copy of the parameters and optimizer state on every
  # device; "sharded": large leaves split over the devices (ZeRO/FSDP style).
  c.param_sharding = "replicated"
  # JAX's persistent compilation cache (tools/trainer/compile_cache.py).
  c.compilation_cache = True
  return c


def with_model(config: ml_collections.ConfigDict,
               model: str) -> ml_collections.ConfigDict:
  """Sets `config.model` and its default `model_config`."""
  config.model = model
  config.dataset = MODELS[model]
  config.model_config = ml_collections.ConfigDict(dict(MODEL_CONFIG_KEYS[model]))
  return config


def _unknown(keys, valid, where: str) -> List[str]:
  errors = []
  for key in keys:
    if key not in valid:
      errors.append(
          f"unknown config key `{where}{key}`; valid keys: "
          f"{', '.join(sorted(valid))}")
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
    check(config.model in MODELS,
          f"`model` must be one of {sorted(MODELS)}, got {config.model!r}")
    check(config.dataset in DATASETS,
          f"`dataset` must be one of {list(DATASETS)}, got {config.dataset!r}")
    if config.model in MODELS:
      check(MODELS[config.model] == config.dataset,
            f"model {config.model!r} trains on dataset "
            f"{MODELS[config.model]!r}, not {config.dataset!r}")
    check(config.optimizer in OPTIMIZERS,
          f"`optimizer` must be one of {list(OPTIMIZERS)}, got "
          f"{config.optimizer!r}")
    for name in ("batch_size", "num_steps", "steps_per_call", "scan_unroll",
                 "eval_every",
                 "checkpoint_every", "keep_checkpoints", "log_every",
                 "seq_len", "eval_batches"):
      positive_int(name)
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
      dropout = config.model_config.get("dropout", 0.0)
      check(0.0 <= dropout < 1.0, f"`model_config.dropout` must be in [0, 1), "
            f"got {dropout!r}")
  if errors:
    raise ValueError("Invalid training config:\n  - " + "\n  - ".join(errors))


def to_dict(config: Any) -> Dict[str, Any]:
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def hashed_dict(config: Any) -> Dict[str, Any]:
  """`to_dict(config)` without `LAYOUT_KEYS`: what a config hash covers."""
  return {k: v for k, v in to_dict(config).items() if k not in LAYOUT_KEYS}
