r"""The binary's training speed: this checkout against another one.

Runs `tools/train.py` of this checkout and of `--baseline` (another checkout
of the repository, e.g. a `git worktree` at the commit before a change)
alternately, `--rounds` times each, on the same config, and reads the
steps/s the binary logs (`train/steps_per_sec` in metrics.jsonl; the first
record, which holds the compilation, is left out). Prints one JSON object:
per config, the median steps/s of both and their ratio (this / baseline;
>= 1 is not slower).

  git worktree add /tmp/base HEAD~1
  python3 -m tools.bench.trainer_throughput --baseline=/tmp/base \
      --configs=digits_mlp --rounds=3
  python3 -m tools.bench.trainer_throughput --baseline=/tmp/base \
      --configs=char_transformer --num_steps=300 --rounds=3
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List

from absl import app
from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

_BASELINE = flags.DEFINE_string(
    "baseline", None, "Another checkout of the repository to compare with.",
    required=True)
_CONFIGS = flags.DEFINE_list("configs", ["digits_mlp", "char_transformer"],
                             "Config names under configs/.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Runs of each checkout, "
                               "alternating.")
_STEPS = flags.DEFINE_integer("num_steps", 1000, "Steps per run (a multiple "
                              "of --log_every).")
_LOG_EVERY = flags.DEFINE_integer("log_every", 100, "Steps between speed "
                                  "records (a multiple of the configs' "
                                  "steps_per_call).")


def steps_per_sec(checkout: str, config: str, num_steps: int) -> List[float]:
  """The steps/s records of one run of `checkout`'s binary."""
  with tempfile.TemporaryDirectory() as workdir:
    proc = subprocess.run(
        [sys.executable, os.path.join(checkout, "tools", "train.py"),
         f"--config={os.path.join(checkout, 'configs', config + '.py')}",
         f"--config.num_steps={num_steps}", "--config.plot=False",
         f"--config.log_every={_LOG_EVERY.value}",
         f"--config.eval_every={num_steps}",
         f"--config.checkpoint_every={num_steps}", f"--workdir={workdir}"],
        cwd=checkout, capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=checkout))
    if proc.returncode != 0:
      raise RuntimeError(f"{checkout}: {config} failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f]
  rates = [r["train/steps_per_sec"] for r in records
           if "train/steps_per_sec" in r]
  return rates[1:]


def main(argv):
  del argv
  out: Dict[str, Dict[str, float]] = {}
  for config in _CONFIGS.value:
    rates = {"this": [], "baseline": []}
    for _ in range(_ROUNDS.value):
      for name, checkout in (("baseline", _BASELINE.value), ("this", _ROOT)):
        rates[name] += steps_per_sec(checkout, config, _STEPS.value)
    this, base = (statistics.median(rates["this"]),
                  statistics.median(rates["baseline"]))
    out[config] = {"this_steps_per_sec": round(this, 2),
                   "baseline_steps_per_sec": round(base, 2),
                   "ratio": round(this / base, 3),
                   "records": len(rates["this"])}
    print(json.dumps({config: out[config]}), flush=True)
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  app.run(main)
