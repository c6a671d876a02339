r"""Startup speed: building a model, and the training binary's first step.

Construction, each sample in a fresh process (imports excluded, no
persistent compilation cache unless named "warm"):

- `pax`: `pax.nets.ResNet18(3, 10)`, `pax.nets.TransformerLM(256, 256, 4, 6,
  128)`, or the 48-layer width-64 MLP `pax.Sequential(*[pax.Linear(64, 64)
  ...])`;
- `haiku_eager`: `hk.transform_with_state(f).init(key, x)` of the same Haiku
  function on the same sample input, run eagerly;
- `haiku_jit`: `jax.jit(init)` of it (compile included);
- `pax_warm`: `pax`, with a persistent cache filled by an earlier process.

Rounds are interleaved in a shuffled order, so load on the shared machine
hits every case alike; medians and ratios are reported.

Time to first step of `tools/train.py` (configs/digits_mlp.py, one call of
`steps_per_call` steps, logged): from process start to the first logged
step (its progress line, logged after the first `steps_per_call` steps),
with an empty cache directory (cold) and with the one an earlier run
filled (warm).

Run (repo root): python3 -m tools.bench.startup [--rounds 3] [--json f]
[--out BENCHMARKS.md] (`--out` replaces the report's startup section, the
one part of BENCHMARKS.md that `tools.bench.run_all` does not write).
Targets (issue 19): pax <= 0.4x haiku_eager and <= 0.6x haiku_jit for
ResNet18 and TransformerLM; warm first step <= 0.5x cold.
"""

import datetime
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from absl import app
from absl import flags

from tools.bench import report_sections
from tools.bench import startup_report

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
_JSON = flags.DEFINE_string("json", None, "Also write results to this file.")
_OUT = flags.DEFINE_string(
    "out", None, "Markdown report, such as BENCHMARKS.md, whose startup "
    "section to replace (appended if it has none).")
_MODELS = flags.DEFINE_list("models", ["resnet18", "transformer_lm", "mlp48"],
                            "Models to build.")
_TRAIN = flags.DEFINE_boolean("train", True, "Also time tools/train.py.")
_CHILD = flags.DEFINE_list("child", None, "Internal: MODEL,VARIANT to time.")

_PROGRESS = re.compile(r"\bstep \d+/\d+ \|")  # The first progress line.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
VARIANTS = ("pax", "pax_warm", "haiku_eager", "haiku_jit")
_TRAIN_FLAGS = ("--config.num_steps=100", "--config.steps_per_call=100",
                "--config.log_every=100", "--config.eval_every=100",
                "--config.checkpoint_every=100", "--config.plot=False")


def _haiku_fn(model: str):
  """The Haiku function and sample inputs the pax model is built from."""
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from pax_haiku._src.nets import haiku_transformer  # pylint: disable=g-import-not-at-top
  if model == "resnet18":
    return (lambda x: hk.nets.ResNet18(10)(x, is_training=True),
            jnp.zeros((1, 32, 32, 3)))
  if model == "transformer_lm":
    return (lambda t: haiku_transformer.TransformerLM(256, 256, 4, 6, 128)(
        t, is_training=True), jnp.zeros((1, 1), jnp.int32))
  return (lambda x: hk.nets.MLP([64] * 48)(x), jnp.zeros((1, 64)))


def _build_pax(model: str):
  import pax_haiku as pax  # pylint: disable=g-import-not-at-top
  if model == "resnet18":
    return pax.nets.ResNet18(3, 10)
  if model == "transformer_lm":
    return pax.nets.TransformerLM(256, 256, 4, 6, 128)
  return pax.Sequential(*[pax.Linear(64, 64) for _ in range(48)])


def _child(model: str, variant: str) -> None:
  """Builds one model once and prints the seconds it took."""
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import pax_haiku as pax  # pylint: disable=g-import-not-at-top
  if variant == "pax_warm":
    pax.enable_compilation_cache(os.environ["PAX_STARTUP_CACHE"])
  key = jax.random.PRNGKey(0)
  if variant.startswith("pax"):
    build = lambda: _build_pax(model)
  else:
    fn, x = _haiku_fn(model)
    init = hk.transform_with_state(fn).init
    if variant == "haiku_jit":
      init = jax.jit(init)
    build = lambda: init(key, x)
  start = time.perf_counter()
  out = build()
  jax.block_until_ready(jax.tree_util.tree_leaves(out))
  print(f"SECONDS {time.perf_counter() - start}")


def _env(**extra: str) -> Dict[str, str]:
  env = dict(os.environ)
  # PYTHONDONTWRITEBYTECODE (set in some sandboxes) would make every sample
  # compile the library's Python sources again; a user's Python keeps them
  # as .pyc files, written here by the first samples.
  for name in ("JAX_COMPILATION_CACHE_DIR", "PAX_HAIKU_CACHE_DIR",
               "PYTHONDONTWRITEBYTECODE"):
    env.pop(name, None)
  env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.update(extra)
  return env


def _construct(model: str, variant: str, cache: str) -> float:
  out = subprocess.run(
      [sys.executable, "-m", "tools.bench.startup",
       f"--child={model},{variant}"], cwd=_ROOT, capture_output=True,
      text=True, env=_env(PAX_STARTUP_CACHE=cache), check=True).stdout
  return float(out.split("SECONDS ")[-1])


def _first_step(cache: str) -> float:
  """Seconds from starting tools/train.py to its first logged step."""
  workdir = tempfile.mkdtemp(prefix="pax_startup_run_")
  start = time.perf_counter()
  proc = subprocess.Popen(
      [sys.executable, os.path.join(_ROOT, "tools", "train.py"),
       f"--workdir={workdir}", *_TRAIN_FLAGS], cwd=_ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      env=_env(PAX_HAIKU_CACHE_DIR=cache))
  seconds = None
  for line in proc.stdout:
    if seconds is None and _PROGRESS.search(line):
      seconds = time.perf_counter() - start
  proc.wait()
  shutil.rmtree(workdir, ignore_errors=True)
  if proc.returncode or seconds is None:
    raise RuntimeError(f"tools/train.py failed (exit {proc.returncode}).")
  return seconds


def measure(models: List[str], rounds: int, train: bool) -> Dict[str, float]:
  """Medians (seconds) of every case, and the ratios the targets name."""
  warm = tempfile.mkdtemp(prefix="pax_startup_cache_")
  train_warm = tempfile.mkdtemp(prefix="pax_startup_train_cache_")
  try:
    cases = {}
    for model in models:
      _construct(model, "pax_warm", warm)  # Fills the warm cache.
      for variant in VARIANTS:
        cases[f"{model}/{variant}"] = (
            lambda m=model, v=variant: _construct(m, v, warm))
    if train:
      _first_step(train_warm)
      cases["train/first_step_warm"] = lambda: _first_step(train_warm)

      def cold():
        path = tempfile.mkdtemp(prefix="pax_startup_cold_")
        try:
          return _first_step(path)
        finally:
          shutil.rmtree(path, ignore_errors=True)
      cases["train/first_step_cold"] = cold
    samples = {name: [] for name in cases}
    rng = random.Random(0)
    for _ in range(rounds):
      order = list(cases)
      rng.shuffle(order)
      for name in order:
        samples[name].append(cases[name]())
  finally:
    shutil.rmtree(warm, ignore_errors=True)
    shutil.rmtree(train_warm, ignore_errors=True)
  result = {name: statistics.median(s) for name, s in samples.items()}
  for model in models:
    for ref in ("haiku_eager", "haiku_jit"):
      for variant in ("pax", "pax_warm"):
        result[f"{model}/{variant}_vs_{ref}"] = (
            result[f"{model}/{variant}"] / result[f"{model}/{ref}"])
  if train:
    result["train/warm_vs_cold"] = (result["train/first_step_warm"] /
                                    result["train/first_step_cold"])
  return result


def _utc(fmt: str) -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime(fmt)


def main(argv):
  del argv
  if _CHILD.value:
    model, variant = _CHILD.value
    _child(model, variant)
    return
  started, load = _utc("%Y-%m-%d %H:%M"), os.getloadavg()[0]
  result = measure(_MODELS.value, _ROUNDS.value, _TRAIN.value)
  print(f"Startup, medians of {_ROUNDS.value} interleaved rounds, each a "
        "fresh process (seconds; ratios x):")
  for name, value in result.items():
    print(f"  {name:40s} {value:8.3f}")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(result, f, indent=2)
  if _OUT.value:
    when = (f"{started} to {_utc('%H:%M')} UTC, {os.cpu_count()} CPU "
            f"cores, load average {load:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at end")
    text = report_sections.replace_section(
        report_sections.read(_OUT.value), startup_report.HEADING,
        startup_report.markdown(result, _ROUNDS.value, when))
    with open(_OUT.value, "w", encoding="utf-8") as f:
      f.write(text)


if __name__ == "__main__":
  app.run(main)
