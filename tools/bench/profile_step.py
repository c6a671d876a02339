r"""Where the Python time of an eager train step goes, per framework.

Runs `--steps` eager steps of one workload for raw Haiku and pax_haiku (and
any installed peer asked for) under cProfile, and prints, per framework, the
profile's top functions and the per-step time spent in Python functions.
With JAX's C++ dispatch fast path a jitted call shows up as a single
`PjitFunction` entry and no Python frames; a step that falls off the fast
path shows `pjit.py` / `api_util.py` frames every step.

Also times the pieces of a step from Python, without the compute (the
jitted step's argument handling): flatten+unflatten of the step's inputs
and of its outputs, interleaved, medians.

    python3 -m tools.bench.profile_step --workload=Wdeep [--steps=300] \
        [--frameworks=haiku,pax_haiku] [--top=15]
"""

import cProfile
import io
import pstats
import statistics

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from tools.bench import frameworks
from tools.bench import measure
from tools.bench import run_all
from tools.bench import workloads as wl_lib

_WORKLOAD = flags.DEFINE_string("workload", "Wdeep", "Workload to profile.")
_STEPS = flags.DEFINE_integer("steps", 300, "Eager steps under the profiler.")
_TOP = flags.DEFINE_integer("top", 15, "Functions to print per framework.")
_PFRAMEWORKS = flags.DEFINE_list("profile_frameworks", ["haiku", "pax_haiku"],
                                 "Families to profile.")


def profile_impl(impl: frameworks.Impl, steps: int, top: int) -> str:
  """cProfile of `steps` eager steps of `impl`; the report as text."""
  impl.compile_sample()
  impl.eager_sample(10)
  profiler = cProfile.Profile()
  profiler.enable()
  impl.eager_sample(steps)
  profiler.disable()
  out = io.StringIO()
  stats = pstats.Stats(profiler, stream=out)
  total = stats.total_tt
  stats.sort_stats("tottime").print_stats(top)
  return (f"== {impl.name}: {total / steps * 1e6:.1f} µs of profiled Python "
          f"time per step (profiler overhead included)\n" + out.getvalue())


def output_round_trip_case(impl: frameworks.Impl):
  """flatten+unflatten of what the step returns (its new carry)."""
  carry = impl.carry
  return lambda: frameworks.round_trip(carry)


def main(argv):
  del argv
  workload = wl_lib.WORKLOADS[_WORKLOAD.value]
  cfg = run_all.Config(workloads=(workload.name,),
                       frameworks=tuple(_PFRAMEWORKS.value))
  avail = run_all.availability(["haiku", *cfg.frameworks])
  runnable = [f for f, r in avail.items() if r is None]
  xs, ys = workload.make_batches(1, 0)
  x, y = jnp.asarray(xs[0]), jnp.asarray(ys[0])
  params, state = wl_lib.haiku_init(workload, x)
  weights = wl_lib.canonical_weights(workload, params)
  impls = run_all._make_impls(cfg, workload, runnable, weights, params,  # pylint: disable=protected-access
                              state, x, y)
  for impl in impls:
    print(profile_impl(impl, _STEPS.value, _TOP.value))
  cases = {}
  for impl in impls:
    for kind, fn in (("inputs", impl.args_flatten_case()),
                     ("outputs", output_round_trip_case(impl))):
      if fn is not None:
        cases[f"{kind} round trip | {impl.name}"] = (
            lambda fn=fn: measure.per_call_us(fn, 2000))
  samples = measure.interleaved(cases, 9)
  print("flatten+unflatten per step, medians of 9 interleaved rounds (µs):")
  for name, values in samples.items():
    print(f"  {name:55s} {statistics.median(values):8.2f}")
  print(f"(jax {jax.__version__})")


if __name__ == "__main__":
  app.run(main)
