r"""Data-parallel scaling of the training binary's step on simulated devices.

For each device count N (default 1, 2, 4, 8) a fresh subprocess starts with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` (the flag must be set
before JAX starts, hence one process per N), builds the binary's mesh, model,
optimizer and jitted K-step `train_chunk` exactly as `train_and_evaluate`
does, warms up (compiles), then times the training loop. Two rates:

* loop steps/s: what the binary does per chunk (draw K global batches on the
  host, split them over the devices, run the K steps, fetch the metrics);
* compute steps/s: the jitted K-step call alone on an already placed chunk.

The global batch is the config's, so every N does the same arithmetic.
Prints a Markdown table (docs/scaling.md has a measured one).

Run (repo root):
  python3 -m tools.bench.scaling --config=configs/digits_mlp.py
  python3 -m tools.bench.scaling --config=configs/smoke.py --devices=1,2,4,8 \
      --chunks=20 --rounds=3 --override=batch_size=512
"""

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

_CONFIG = flags.DEFINE_string(
    "config", os.path.join(_ROOT, "configs", "digits_mlp.py"),
    "Config file (configs/*.py).")
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "KEY=VALUE config overrides (Python literals), e.g. "
    "batch_size=512 or model_config.hidden_sizes=(512,512).")
_DEVICES = flags.DEFINE_string("devices", "1,2,4,8",
                               "Comma-separated simulated device counts.")
_CHUNKS = flags.DEFINE_integer("chunks", 10,
                               "Timed K-step calls per round (after warmup).")
_ROUNDS = flags.DEFINE_integer("rounds", 3,
                               "Timing rounds per device count (median).")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")
_WORKER = flags.DEFINE_integer("worker", 0,
                               "Internal: measure in this process with N "
                               "devices and print JSON.")


def load_config(path: str, overrides: List[str]) -> Any:
  """The config of `path` with `KEY=VALUE` overrides applied."""
  import ast  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in overrides:
    key, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def measure(config: Any, num_devices: int, chunks: int,
            rounds: int) -> Dict[str, Any]:
  """Steps/s of the binary's loop on `num_devices` devices (this process)."""
  import jax  # pylint: disable=g-import-not-at-top
  import pax_haiku as pax  # pylint: disable=g-import-not-at-top
  from tools.trainer import config_schema  # pylint: disable=g-import-not-at-top
  from tools.trainer import models  # pylint: disable=g-import-not-at-top
  from tools.trainer import train_lib  # pylint: disable=g-import-not-at-top

  config.num_devices = num_devices
  config_schema.validate(config)
  mesh = train_lib.make_mesh(config)
  from tools.trainer import pipeline  # pylint: disable=g-import-not-at-top
  train_source, _ = train_lib.load_dataset(config)
  train_data = pipeline.TrainPipeline(
      train_source, global_batch_size=config.batch_size, seed=config.seed)
  model = models.build_model(config)
  optimizer = pax.from_optax(models.make_optimizer(config))(model.parameters())
  model, optimizer = train_lib.place((model, optimizer), mesh, config)
  train_chunk = train_lib.make_train_chunk(config, mesh, model, optimizer)
  k = config.steps_per_call

  def loop_call(model, optimizer):
    chunk = train_lib.shard_chunk(train_data.next_chunk(k), mesh)
    model, optimizer, aux = train_chunk(model, optimizer, chunk)
    float(pax.sharding.to_host(aux)["loss"])
    return model, optimizer

  model, optimizer = loop_call(model, optimizer)  # compile + warm up
  fixed = train_lib.shard_chunk(task.train.next_chunk(k), mesh)
  # The chunk donates (consumes) the model and optimizer: keep what it returns.
  model, optimizer, aux = jax.block_until_ready(
      train_chunk(model, optimizer, fixed))
  loop, compute = [], []
  for _ in range(rounds):
    t0 = time.perf_counter()
    for _ in range(chunks):
      model, optimizer = loop_call(model, optimizer)
    loop.append(chunks * k / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for _ in range(chunks):
      model, optimizer, aux = train_chunk(model, optimizer, fixed)
    jax.block_until_ready((model, optimizer, aux))
    compute.append(chunks * k / (time.perf_counter() - t0))
  return {"devices": mesh.size, "platform": jax.devices()[0].platform,
          "batch_size": config.batch_size,
          "per_device_batch": config.batch_size // mesh.size,
          "loop_steps_per_s": statistics.median(loop),
          "compute_steps_per_s": statistics.median(compute)}


def run_worker(n: int, argv_flags: List[str]) -> Dict[str, Any]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={n}").strip()
  env.setdefault("JAX_PLATFORMS", "cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "tools.bench.scaling", f"--worker={n}",
       *argv_flags], cwd=_ROOT, env=env, capture_output=True, text=True,
      timeout=1800, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{n}-device worker failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _rate(value: float) -> str:
  return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def table(rows: List[Dict[str, Any]]) -> str:
  """The Markdown table of `measure` results (first row = baseline)."""
  base_loop = rows[0]["loop_steps_per_s"]
  lines = ["| devices | per-device batch | loop steps/s | compute steps/s | "
           "loop examples/s | speed-up (loop) |",
           "|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(
        f"| {r['devices']} | {r['per_device_batch']} | "
        f"{_rate(r['loop_steps_per_s'])} | "
        f"{_rate(r['compute_steps_per_s'])} | "
        f"{r['loop_steps_per_s'] * r['batch_size']:.0f} | "
        f"{r['loop_steps_per_s'] / base_loop:.2f}x |")
  return "\n".join(lines)


def main(argv):
  del argv
  config = load_config(_CONFIG.value, _OVERRIDE.value)
  if _WORKER.value:
    result = measure(config, _WORKER.value, _CHUNKS.value, _ROUNDS.value)
    print(json.dumps(result))
    return 0
  passed = [f"--config={_CONFIG.value}", f"--chunks={_CHUNKS.value}",
            f"--rounds={_ROUNDS.value}"]
  passed += [f"--override={o}" for o in _OVERRIDE.value]
  rows = []
  for n in [int(x) for x in _DEVICES.value.split(",") if x.strip()]:
    rows.append(run_worker(n, passed))
    print(f"{n} device(s): {rows[-1]['loop_steps_per_s']:.0f} steps/s "
          f"(compute {rows[-1]['compute_steps_per_s']:.0f})", file=sys.stderr,
          flush=True)
  name = os.path.basename(_CONFIG.value)
  overrides = (" " + " ".join(_OVERRIDE.value)) if _OVERRIDE.value else ""
  print(f"{name}{overrides}: global batch {config.batch_size}, "
        f"{config.steps_per_call} steps per call, {rows[0]['platform']}\n")
  print(table(rows))
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"config": _CONFIG.value, "overrides": _OVERRIDE.value,
                 "rows": rows}, f, indent=2)
  return 0


if __name__ == "__main__":
  app.run(main)
