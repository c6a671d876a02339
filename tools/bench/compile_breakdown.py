"""Where a row's first-call compile time goes: trace, lower, XLA compile.

`run_all` times the first call of a freshly built jitted step as one
number. This splits it into the three stages (`jit(f).trace(...)`,
`.lower()`, `.compile()`), rounds interleaved over the rows, medians
reported, so a gap to raw Haiku can be put on Python tracing (pax_haiku's
or Haiku's code), on lowering, or on XLA.

Run (repo root):
  python3 -m tools.bench.compile_breakdown --workload=Wdeep [--rounds=5]
"""

import statistics
import sys
import time
from typing import Dict, List

from absl import app
from absl import flags
import jax.numpy as jnp

from tools.bench import frameworks
from tools.bench import measure
from tools.bench import workloads as wl_lib

_WORKLOAD = flags.DEFINE_string("workload", "Wdeep", "Workload name.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.")

STAGES = ("trace", "lower", "compile")


def stage_seconds(impl: frameworks.Impl) -> Dict[str, float]:
  """Seconds of each stage for a freshly built step of `impl`."""
  carry = impl._initial_carry()  # pylint: disable=protected-access
  step = impl._build_step()  # pylint: disable=protected-access
  t0 = time.perf_counter()
  traced = step.trace(*carry, impl.x, impl.y)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  lowered.compile()
  t3 = time.perf_counter()
  return {"trace": t1 - t0, "lower": t2 - t1, "compile": t3 - t2}


def breakdown(workload_name: str, rounds: int) -> Dict[str, Dict[str, float]]:
  """Row name -> stage -> median seconds (raw Haiku and pax_haiku rows)."""
  workload = wl_lib.WORKLOADS[workload_name]
  xs, ys = workload.make_batches(1, 0)
  x, y = jnp.asarray(xs[0]), jnp.asarray(ys[0])
  params, state = wl_lib.haiku_init(workload, x)
  weights = wl_lib.canonical_weights(workload, params)
  impls = frameworks.haiku_and_pax_impls(workload, weights, params, state,
                                         x, y)
  for impl in impls:  # Fills the caches every row shares (warm-up).
    stage_seconds(impl)
  samples: Dict[str, Dict[str, List[float]]] = {
      i.name: {s: [] for s in STAGES} for i in impls}
  for r in range(rounds):
    order = impls if r % 2 == 0 else impls[::-1]
    for impl in order:
      for stage, seconds in stage_seconds(impl).items():
        samples[impl.name][stage].append(seconds)
  return {n: {s: statistics.median(v) for s, v in st.items()}
          for n, st in samples.items()}


def main(argv):
  del argv
  measure.compile_for_real()
  result = breakdown(_WORKLOAD.value, _ROUNDS.value)
  base = result["haiku"]
  print(f"{_WORKLOAD.value}: median seconds over {_ROUNDS.value} rounds "
        "(ratio to raw Haiku)")
  for name, stages in result.items():
    cells = "  ".join(f"{s} {stages[s]:.3f} ({stages[s] / base[s]:.2f}x)"
                      for s in STAGES)
    total = sum(stages.values())
    print(f"  {name:24s} {cells}  total {total:.3f} "
          f"({total / sum(base.values()):.2f}x)")
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
