r"""pax_haiku vs raw Haiku, Equinox, Flax NNX and PAX, side by side.

One command runs every workload and framework in one process and writes a
Markdown report (BENCHMARKS.md) and the raw numbers (JSON):

    python3 -m tools.bench.run_all [--quick] [--out BENCHMARKS.md] \
        [--json tools/bench/results.json] [--workloads W1,W3] \
        [--frameworks haiku,pax_haiku,equinox,flax_nnx,pax]

Peers are optional: a framework that is not installed (or, for PAX, does not
run on this JAX) is skipped with the reason printed and written to the
report. Install them with `pip install equinox==0.13.8 flax==0.12.8`.

Method (details in the report's "Method" section): in each round raw Haiku
runs before, between and after the other frameworks (shuffled); a time is a
median over rounds and a ratio the median over rounds of a sample divided by
the raw-Haiku samples next to it in time. Time budgets (scaled by
`--budget_scale`) shorten the fused scans and cut scan/compile rounds of the
heavy workloads; the report states what each workload got. A default run
takes about 10 minutes on 2 busy cores; `--quick` about 20 s per workload.

Profiling helpers: `python3 -m tools.bench.profile_step --workload=Wdeep`
(cProfile of eager steps and the per-step pytree costs) and
`python3 -m tools.bench.core_bench` (flatten and parameters() costs).
"""

import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import re
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from tools.bench import donated as donated_lib
from tools.bench import frameworks
from tools.bench import measure
from tools.bench import peers_equinox
from tools.bench import peers_nnx
from tools.bench import peers_pax
from tools.bench import report_sections
from tools.bench import workloads as wl_lib

FAMILIES = ("haiku", "pax_haiku", "equinox", "flax_nnx", "pax")
PEERS = {"equinox": peers_equinox, "flax_nnx": peers_nnx, "pax": peers_pax}

# The columns of every workload table in the report (tested).
COLUMNS = ("framework", "eager step (ms)", "eager ×", "fused scan (ms/step)",
           "scan ×", "compile (s)", "compile ×", "HLO instr.", "HLO ×",
           "flatten+unflatten (µs)", "flatten ×", "params out+in (µs)",
           "first loss")

_QUICK = flags.DEFINE_bool(
    "quick", False, "Few rounds and short samples (smoke test); the numbers "
    "are not meaningful.")
_OUT = flags.DEFINE_string("out", "BENCHMARKS.md", "Markdown report path.")
_JSON = flags.DEFINE_string("json", "tools/bench/results.json",
                            "JSON results path ('' for none).")
_WORKLOADS = flags.DEFINE_list("workloads", list(wl_lib.WORKLOADS),
                               "Workloads to run.")
_FRAMEWORKS = flags.DEFINE_list("frameworks", list(FAMILIES),
                                "Frameworks to run (haiku is always run).")
_ROUNDS = flags.DEFINE_integer("rounds", None, "Interleaved rounds (eager, "
                               "flatten, and at most this for the scan).")
_COMPILE_ROUNDS = flags.DEFINE_integer(
    "compile_rounds", None, "Most compile rounds (the budget may cut them).")
_SCAN_STEPS = flags.DEFINE_integer("scan_steps", None,
                                   "Most steps fused in one scan.")
_BUDGET_SCALE = flags.DEFINE_float(
    "budget_scale", 1.0, "Multiplies every time budget (longer runs: "
    "longer scans and more scan/compile rounds).")
_GC_FREEZE = flags.DEFINE_bool(
    "gc_freeze", False, "gc.freeze() during the eager rounds (shows what "
    "Python's garbage collector costs each framework).")
_HLO_DIR = flags.DEFINE_string(
    "hlo_dir", None, "Also write every row's optimized step HLO, as compiled "
    "and normalized (`measure.normalized_program`), to this folder.")
_PAX_VARIANTS = flags.DEFINE_bool(
    "pax_variants", True, "Also run pax_haiku with `pax.nets.MLP` (one "
    "Haiku-backed module) on the MLP workloads, beside `pax.Sequential`.")
_CLOCK = flags.DEFINE_enum(
    "clock", "wall", list(measure.SAMPLE_CLOCKS), "Clock of the eager and "
    "fused-scan samples: wall time, or this process's CPU time (all its "
    "threads), which other processes' load on a shared machine does not "
    "inflate.")
_DONATED = flags.DEFINE_bool(
    "donated", True, "Also run the donating steps: `haiku (donated)` "
    "(`donate_argnums`) and `pax_haiku (donated)` (`pax.jit_update`, the "
    "recommended step).")


@dataclasses.dataclass
class Config:
  """What to run and the time budgets.

  Attributes:
    workloads: workload names.
    frameworks: families to run (raw Haiku always runs: it is the baseline).
    rounds: rounds for eager steps and flatten timings.
    compile_rounds: most compile rounds (after a trace-only warm-up).
    compile_budget_s: compile rounds beyond the first are cut to fit this.
    scan_steps: most steps fused in one scan.
    min_scan_steps: fewest steps in one scan.
    scan_sample_s: the scan is shortened (down to `min_scan_steps`) to keep
      one call near this long (estimated from raw Haiku's eager step).
    scan_budget_s: scan rounds are cut (down to `min_rounds`) to fit this.
    min_rounds: fewest rounds of any cut measurement.
    sample_s: target seconds of one eager sample (sets steps per sample).
    flatten_sample_s: target seconds of one flatten sample.
    pax_variants: also run `pax.nets.MLP` rows.
    donated: also run the donating steps of raw Haiku and pax_haiku.
    clock: `wall` or `process` (CPU time) for eager and scan samples.
    gc_freeze: `gc.freeze()` during the eager rounds (moves every live
      Python object out of the collector's reach, so that full collections
      triggered by the steps' allocations are cheap), to show their cost.
    hlo_dir: if set, each row's step HLO is written there
      (`<workload>.<row>.hlo.txt` and `.normalized.txt`).
    quick: smoke-test mode (recorded in the report).
    seed: data and round-order seed.
  """
  workloads: Sequence[str] = tuple(wl_lib.WORKLOADS)
  frameworks: Sequence[str] = FAMILIES
  rounds: int = 7
  compile_rounds: int = 3
  compile_budget_s: float = 40.0
  scan_steps: int = 100
  min_scan_steps: int = 5
  scan_sample_s: float = 2.0
  scan_budget_s: float = 30.0
  min_rounds: int = 3
  sample_s: float = 0.25
  flatten_sample_s: float = 0.02
  pax_variants: bool = True
  donated: bool = True
  clock: str = "wall"
  gc_freeze: bool = False
  hlo_dir: Optional[str] = None
  quick: bool = False
  seed: int = 0

  @classmethod
  def quick_config(cls, **kwargs) -> "Config":
    base = dict(rounds=2, compile_rounds=1, compile_budget_s=0.0,
                scan_steps=10, min_scan_steps=2, scan_sample_s=0.2,
                scan_budget_s=0.0, min_rounds=2, sample_s=0.03,
                flatten_sample_s=0.003, quick=True)
    base.update(kwargs)
    return cls(**base)


# ----------------------------------------------------------------------------
# Building the rows.
# ----------------------------------------------------------------------------


def _log(msg: str) -> None:
  print(msg, flush=True)


def availability(families: Sequence[str]) -> Dict[str, Optional[str]]:
  """family -> None if it can run here, else the reason it is skipped."""
  out = {}
  for family in families:
    if family in ("haiku", "pax_haiku"):
      out[family] = None
    elif family in PEERS:
      out[family] = PEERS[family].unavailable_reason()
    else:
      raise ValueError(f"unknown framework {family!r}; choose from "
                       f"{', '.join(FAMILIES)}")
  return out


def _make_impls(cfg: Config, workload: wl_lib.Workload, runnable: List[str],
                weights, params, state, x, y) -> List[frameworks.Impl]:
  impls = frameworks.haiku_and_pax_impls(
      workload, weights, params, state, x, y,
      pax_haiku="pax_haiku" in runnable, pax_variants=cfg.pax_variants)
  if cfg.donated:
    impls += donated_lib.donated_impls(workload, weights, params, state, x, y,
                                       pax_haiku="pax_haiku" in runnable)
  for family in ("equinox", "flax_nnx", "pax"):
    if family in runnable:
      for cls in PEERS[family].IMPLS:
        impls.append(cls(workload, weights, x, y))
  return impls


# ----------------------------------------------------------------------------
# Measuring one workload.
# ----------------------------------------------------------------------------


def _write_hlo(folder: str, workload: str, texts: Dict[str, str]) -> None:
  os.makedirs(folder, exist_ok=True)
  for name, text in texts.items():
    stem = os.path.join(folder, f"{workload}." +
                        re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_"))
    for suffix, body in (("hlo.txt", text),
                         ("normalized.txt", measure.normalized_program(text))):
      with open(f"{stem}.{suffix}", "w") as f:
        f.write(body)


def _floor_name(row_name: str, layout_field: bool = True) -> str:
  return f"{row_name} (JAX floor{'' if layout_field else ', no meta'})"


def _fit_rounds(budget_s: float, per_round_s: float, lo: int, hi: int) -> int:
  if per_round_s <= 0:
    return hi
  return int(max(lo, min(hi, math.floor(budget_s / per_round_s))))


def _hlo_investigation(haiku: frameworks.HaikuImpl,
                       pax_impl: frameworks.PaxHaikuImpl,
                       haiku_count: int, pax_count: int,
                       pax_hist: Dict[str, int],
                       haiku_hist: Dict[str, int],
                       control_text: Optional[str]) -> Dict[str, Any]:
  """Why pax_haiku's optimized HLO differs from raw Haiku's, if it does."""
  out: Dict[str, Any] = {
      "opcode_difference": measure.histogram_difference(pax_hist, haiku_hist)}
  out["stablehlo_ops"] = {"haiku": haiku.stablehlo_op_count(),
                          "pax_haiku": frameworks.stablehlo_op_count(
                              pax_impl._lower(pax_impl.step,  # pylint: disable=protected-access
                                              pax_impl.carry).as_text())}
  control = (None if control_text is None else
             len(measure.hlo_instructions(control_text)))
  out["haiku_in_pax_leaf_order"] = control
  same_program = (out["stablehlo_ops"]["haiku"] ==
                  out["stablehlo_ops"]["pax_haiku"])
  if control == pax_count:
    out["diagnosis"] = (
        f"raw Haiku's own step, fed its params in pax_haiku's leaf order, "
        f"also compiles to {control} instructions (vs {haiku_count} in "
        "Haiku's sorted-key order)"
        + (" and the StableHLO before optimization has the same number of "
           "ops" if same_program else "")
        + ": the difference comes from the order of the jitted function's "
        "arguments (XLA's layout/fusion choices), not from extra "
        "computation in the bridge.")
  else:
    out["diagnosis"] = (
        "the difference does not come from argument order alone (control: "
        f"{control}); StableHLO ops haiku/pax_haiku = "
        f"{out['stablehlo_ops']['haiku']}/{out['stablehlo_ops']['pax_haiku']}"
        ".")
  return out


def _matmul_floor_case(workload: wl_lib.Workload, seed: int,
                       sample_s: float) -> Tuple[Callable[[], float], int]:
  """A plain-`jnp.dot` benchmark of exactly the MLP step's matmuls.

  Returns:
    `(sample_fn, flops)`: `sample_fn()` returns seconds per call of one
    jitted function doing every forward/backward matmul of one step.
  """
  sizes, b = workload.config["sizes"], workload.batch_size
  rng = np.random.RandomState(seed)
  shapes = []
  for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    shapes.append(((b, d_in), (d_in, d_out)))  # forward
    shapes.append(((d_in, b), (b, d_out)))  # weight gradient
    if i:
      shapes.append(((b, d_out), (d_out, d_in)))  # input gradient
  operands = [(jnp.asarray(rng.randn(*s).astype(np.float32)),
               jnp.asarray(rng.randn(*t).astype(np.float32)))
              for s, t in shapes]
  flops = sum(2 * s[0] * s[1] * t[1] for s, t in shapes)
  assert flops == workload.matmul_flops_per_step()
  dots = jax.jit(lambda ops: [jnp.dot(a, c) for a, c in ops])
  measure.block(dots(operands))
  one = measure.timed(lambda: dots(operands))
  n = max(2, int(round(sample_s / max(one, 1e-6))))

  def sample():
    start = measure.sample_clock()
    out = None
    for _ in range(n):
      out = dots(operands)
    measure.block(out)
    return (measure.sample_clock() - start) / n

  return sample, flops


def _ratio_stats(ratios: Sequence[float]) -> Tuple[Optional[float],
                                                   Optional[float]]:
  return measure.median(ratios), measure.spread(ratios)


def run_workload(cfg: Config, workload: wl_lib.Workload,
                 runnable: List[str]) -> Dict[str, Any]:
  """Every measurement of one workload; returns its JSON-able results."""
  res: Dict[str, Any] = {"title": workload.title,
                         "batch_size": workload.batch_size}
  start = time.perf_counter()
  xs1, ys1 = workload.make_batches(1, cfg.seed)
  x, y = jnp.asarray(xs1[0]), jnp.asarray(ys1[0])
  params, state = wl_lib.haiku_init(workload, x)
  weights = wl_lib.canonical_weights(workload, params)
  res["num_parameters"] = wl_lib.num_parameters(weights)
  impls = _make_impls(cfg, workload, runnable, weights, params, state, x, y)
  names = [impl.name for impl in impls]
  by_name = {impl.name: impl for impl in impls}
  base = impls[0]
  res["build_s"] = time.perf_counter() - start
  _log(f"[{workload.name}] {workload.title}: {res['num_parameters']} params;"
       f" rows: {', '.join(names)} (built in {res['build_s']:.1f}s)")

  # -- compile (first call of a fresh jitted step) and HLO -----------------
  if not cfg.quick:
    for impl in impls:
      impl.warm_trace()
  compile_fns = {n: by_name[n].compile_sample for n in names}
  # Raw Haiku and every pax_haiku row compile back to back in each round.
  ours = [base.name] + [n for n in names
                        if by_name[n].family == "pax_haiku"]
  compile_samples = measure.interleaved(compile_fns, 1, cfg.seed, ours)
  round_s = sum(v[0] for v in compile_samples.values())
  extra = _fit_rounds(cfg.compile_budget_s - round_s, round_s, 0,
                      cfg.compile_rounds - 1)
  if extra:
    more = measure.interleaved(compile_fns, extra, cfg.seed + 1, ours)
    compile_samples = {n: compile_samples[n] + more[n] for n in names}
  res["compile_rounds"] = 1 + extra
  # The compile-time target needs a few ratios even where the budget cut
  # the peers to fewer rounds: raw Haiku and pax_haiku get the rest alone.
  ours_only = min(cfg.compile_rounds, cfg.min_rounds) - (1 + extra)
  if ours_only > 0:
    more = measure.interleaved({n: compile_fns[n] for n in ours}, ours_only,
                               cfg.seed + 5, ours)
    for n in ours:
      compile_samples[n] = compile_samples[n] + more[n]
  res["compile_rounds_pax_haiku"] = 1 + extra + max(0, ours_only)
  compile_ratios = {
      n: [s / b for s, b in zip(compile_samples[n], compile_samples[base.name])]
      for n in names}
  hlo_text = {n: by_name[n].hlo_text() for n in names}
  if cfg.hlo_dir:
    _write_hlo(cfg.hlo_dir, workload.name, hlo_text)
  hlo_hist = {n: measure.opcode_histogram(t) for n, t in hlo_text.items()}
  hlo = {n: sum(h.values()) for n, h in hlo_hist.items()}
  _log(f"[{workload.name}] compiled ({1 + extra} round(s)); HLO "
       "instructions: " + ", ".join(f"{n}={hlo[n]}" for n in names))
  losses = {n: by_name[n].loss0 for n in names}

  # -- eager steps from a Python loop -------------------------------------
  base.eager_sample(1)
  t_step = min(base.eager_sample(2), base.eager_sample(2))
  steps = int(max(2, min(1000, round(cfg.sample_s / t_step))))
  res["eager_steps_per_sample"] = steps
  for impl in impls:  # Warm-up sample (caches, allocator).
    impl.eager_sample(steps)
    impl.gc_collections, impl.gc_steps = [0, 0, 0], 0
  if cfg.gc_freeze:
    gc.collect()
    gc.freeze()
  cases = {n: (lambda impl=by_name[n]: impl.eager_sample(steps))
           for n in names}
  if workload.name == "W2":
    floor_sample, floor_flops = _matmul_floor_case(workload, cfg.seed,
                                                   cfg.sample_s)
    cases["matmul floor"] = floor_sample
  eager, eager_ratios = measure.bracketed(cases, base.name, cfg.rounds,
                                          cfg.seed + 2)
  res["eager_rounds"] = cfg.rounds
  if cfg.gc_freeze:
    gc.unfreeze()
  t_step = measure.median(eager[base.name])
  _log(f"[{workload.name}] eager: {steps} steps/sample x {cfg.rounds} "
       "rounds; medians (ms): " + ", ".join(
           f"{n}={measure.median(v) * 1e3:.3f}" for n, v in eager.items()))
  floor = None
  if workload.name == "W2":
    floor_s = measure.median(eager.pop("matmul floor"))
    eager_ratios.pop("matmul floor")
    floor = {
        "matmul_flops": floor_flops,
        "xla_flops": _xla_flops(base),
        "dot_gflops_per_s": floor_flops / floor_s / 1e9,
        "floor_ms": floor_s * 1e3,
        "step_ms": {n: measure.median(eager[n]) * 1e3 for n in names},
    }
    floor["step_over_floor"] = {n: v / floor["floor_ms"]
                                for n, v in floor["step_ms"].items()}

  # -- fused scan ------------------------------------------------------------
  scan_names = [n for n in names if by_name[n].measures_scan]
  scan_len = int(max(cfg.min_scan_steps,
                     min(cfg.scan_steps, cfg.scan_sample_s // t_step)))
  sxs, sys_ = workload.make_batches(scan_len, cfg.seed + 1)
  sxs, sys_ = jnp.asarray(sxs), jnp.asarray(sys_)
  scan_compile = {n: by_name[n].scan_compile_sample(sxs, sys_)
                  for n in scan_names}
  scan_text = {n: by_name[n].scan_hlo_text() for n in scan_names}
  scan_hlo = {n: len(measure.hlo_instructions(t)) for n, t in scan_text.items()}
  per_round = (2 * len(scan_names) - 1) * scan_len * t_step
  scan_rounds = _fit_rounds(cfg.scan_budget_s, per_round, cfg.min_rounds,
                            cfg.rounds)
  scan, scan_ratios = measure.bracketed(
      {n: by_name[n].scan_sample for n in scan_names}, base.name,
      scan_rounds, cfg.seed + 3)
  res["scan_steps"] = scan_len
  res["scan_rounds"] = scan_rounds
  _log(f"[{workload.name}] fused scan: {scan_len} steps x {scan_rounds} "
       "rounds; medians (ms/step): " + ", ".join(
           f"{n}={measure.median(v) * 1e3:.3f}" for n, v in scan.items()))

  # -- Python-side pytree costs ---------------------------------------------
  py: Dict[str, Tuple[Dict[str, List[float]], Dict[str, List[float]]]] = {}
  for kind in ("flatten", "args_flatten", "params"):
    kind_cases = {}
    fns = {n: getattr(by_name[n], f"{kind}_case")() for n in names}
    if kind == "flatten":
      # JAX's floor for each model's node structure, in the same rounds.
      for layout_field in (True, False):
        fns.update({_floor_name(n, layout_field):
                    by_name[n].flatten_floor_case(layout_field)
                    for n in names})
    for n, fn in fns.items():
      if fn is None:
        continue
      fn()
      single = measure.per_call_us(fn, 3) * 1e-6
      number = int(max(3, min(100000, cfg.flatten_sample_s /
                              max(single, 1e-7))))
      kind_cases[n] = (lambda fn=fn, number=number:
                       measure.per_call_us(fn, number))
    if base.name in kind_cases:
      py[kind] = measure.bracketed(kind_cases, base.name, cfg.rounds,
                                   cfg.seed + 4)
    elif kind_cases:
      py[kind] = (measure.interleaved(kind_cases, cfg.rounds, cfg.seed + 4),
                  {})

  # -- rows ---------------------------------------------------------------------
  rows = {}
  for n in names:
    impl = by_name[n]
    # A donating pax_haiku row is compared with raw Haiku's donating step.
    ref = getattr(impl, "reference", base.name)
    ref = ref if ref in by_name else base.name
    used, used_ratios = compile_samples[n], compile_ratios[n]
    row = {
        "family": impl.family,
        "eager_ms": measure.median(eager[n]) * 1e3,
        "eager_samples_ms": [v * 1e3 for v in eager[n]],
        "eager_ratio_samples": eager_ratios[n],
        "gc_collections_per_1000_steps": [
            round(c * 1000 / max(1, impl.gc_steps), 1)
            for c in impl.gc_collections],
        "compile_s": measure.median(used),
        "compile_samples_s": compile_samples[n],
        "hlo_instructions": hlo[n],
        "hlo_ratio": hlo[n] / hlo[ref],
        "reference": ref,
        "first_loss": losses[n],
    }
    row["eager_ratio"], row["eager_ratio_spread"] = _ratio_stats(
        eager_ratios[n])
    row["compile_ratio"], row["compile_ratio_spread"] = _ratio_stats(
        used_ratios)
    if ref != base.name:
      # Per round: this row's ratio over the reference row's (both to the
      # raw-Haiku samples bracketing them in that round).
      row["eager_ratio_to_reference"], row[
          "eager_ratio_to_reference_spread"] = _ratio_stats(
              [a / b for a, b in zip(eager_ratios[n], eager_ratios[ref])])
    if n in scan:
      row.update({
          "scan_ms_per_step": measure.median(scan[n]) * 1e3,
          "scan_samples_ms_per_step": [v * 1e3 for v in scan[n]],
          "scan_ratio_samples": scan_ratios[n],
          "scan_compile_s": scan_compile[n],
          "scan_hlo_instructions": scan_hlo[n],
      })
      row["scan_ratio"], row["scan_ratio_spread"] = _ratio_stats(
          scan_ratios[n])
    for kind, (samples, ratios) in py.items():
      for key, case in ((kind, n), (f"{kind}_floor", _floor_name(n)),
                        (f"{kind}_floor_no_meta", _floor_name(n, False))):
        if case in samples:
          row[f"{key}_us"] = measure.median(samples[case])
          row[f"{key}_samples_us"] = samples[case]
          if case in ratios:
            row[f"{key}_ratio"], row[f"{key}_ratio_spread"] = (
                _ratio_stats(ratios[case]))
    rows[n] = row
  res["rows"] = rows
  res["loss_check"] = {
      n: abs(losses[n] - losses[base.name]) <= 1e-5 * max(
          1.0, abs(losses[base.name])) for n in names}
  if floor:
    res["floor"] = floor
  # Every pax_haiku row (its variants too): the same program as raw Haiku?
  res["same_program"] = {
      n: {"step": measure.same_program(hlo_text[rows[n]["reference"]],
                                       hlo_text[n]),
          "scan": (measure.same_program(scan_text[base.name], scan_text[n])
                   if n in scan_text and base.name in scan_text else None)}
      for n in names if by_name[n].family == "pax_haiku"}
  if "pax_haiku" in by_name:
    res["hlo_pax_vs_haiku"] = {
        "haiku": hlo[base.name], "pax_haiku": hlo["pax_haiku"],
        "identical_count": hlo[base.name] == hlo["pax_haiku"],
        "scan_haiku": scan_hlo.get(base.name),
        "scan_pax_haiku": scan_hlo.get("pax_haiku"),
        "same_program": res["same_program"]["pax_haiku"]["step"],
        "scan_same_program": res["same_program"]["pax_haiku"]["scan"],
    }
    control_text = None
    if not res["hlo_pax_vs_haiku"]["same_program"]:
      # Control: raw Haiku's step fed its params in pax_haiku's leaf order
      # (compiled once; also used by _hlo_investigation).
      leaves = jax.tree_util.tree_leaves(
          by_name["pax_haiku"].model.parameters())
      try:
        control_text = base.hlo_text_in_leaf_order(leaves)
        res["hlo_pax_vs_haiku"]["same_program_in_pax_leaf_order"] = (
            measure.same_program(control_text, hlo_text["pax_haiku"]))
      except (KeyError, ValueError) as e:
        res["hlo_pax_vs_haiku"]["control_error"] = str(e)
    if hlo[base.name] != hlo["pax_haiku"]:
      res["hlo_pax_vs_haiku"].update(_hlo_investigation(
          base, by_name["pax_haiku"], hlo[base.name], hlo["pax_haiku"],
          hlo_hist["pax_haiku"], hlo_hist[base.name], control_text))
      _log(f"[{workload.name}] HLO differs: "
           f"{res['hlo_pax_vs_haiku']['diagnosis']}")
  res["wall_s"] = time.perf_counter() - start
  _log(f"[{workload.name}] done in {res['wall_s']:.0f}s")
  return res


def _xla_flops(impl: frameworks.Impl) -> Optional[float]:
  """XLA's FLOP count of the step (cost analysis), if it reports one."""
  try:
    lowered = impl._lower(impl.step, impl.carry)  # pylint: disable=protected-access
    cost = getattr(lowered, "lowered", lowered).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost["flops"]) if cost and "flops" in cost else None
  except Exception:  # pylint: disable=broad-except
    return None


# ----------------------------------------------------------------------------
# Targets and report.
# ----------------------------------------------------------------------------

TARGETS = (
    # (description, workloads, row key, limit, unit[, rows]); without rows:
    # every pax_haiku row.
    ("HLO instruction count = 1.00x raw Haiku", None, "hlo_ratio", 1.0, "x"),
    ("eager step <= 1.05x raw Haiku", ("Wdeep",), "eager_ratio", 1.05, "x"),
    ("eager step <= 1.02x raw Haiku", ("W1", "W2", "W3", "W4"),
     "eager_ratio", 1.02, "x"),
    ("fused scan <= 1.01x raw Haiku", None, "scan_ratio", 1.01, "x"),
    ("compile time <= 1.1x raw Haiku", None, "compile_ratio", 1.1, "x"),
    ("flatten+unflatten <= 1.5x the Haiku dict", None, "flatten_ratio", 1.5,
     "x"),
    ("parameters()+update_parameters() <= 0.1 ms", ("Wdeep",), "params_us",
     100.0, "µs"),
    # The recommended step (`pax.jit_update`) against raw Haiku's plain and
    # donating steps.
    ("recommended step <= 0.85x raw Haiku", ("W2",), "eager_ratio", 0.85,
     "x", ("pax_haiku (donated)",)),
    ("recommended step <= 0.78x raw Haiku", ("Wdeep",), "eager_ratio", 0.78,
     "x", ("pax_haiku (donated)",)),
    ("recommended step <= 1.05x raw Haiku donated", None,
     "eager_ratio_to_reference", 1.05, "x", ("pax_haiku (donated)",)),
)


def evaluate_targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
  """pax_haiku's value for every (target, workload) pair that was run."""
  out = []
  for desc, names, key, limit, unit, *only in TARGETS:
    for wname, wres in results["workloads"].items():
      if names is not None and wname not in names:
        continue
      for rname, row in wres["rows"].items():
        if row.get("family") != "pax_haiku" or row.get(key) is None:
          continue
        if only and rname not in only[0]:
          continue
        value = row[key]
        met = (value == limit) if key == "hlo_ratio" else (value <= limit)
        spread = (row.get(key + "_spread") if "_ratio" in key else None)
        # A fused scan that compiles to raw Haiku's very program (same
        # instructions, shapes and order; only argument names differ) runs
        # the same machine code: a measured gap is this machine's noise,
        # shown with its spread, not a cost of the bridge.
        same = (key == "scan_ratio" and
                (wres.get("same_program") or {}).get(rname, {}).get("scan"))
        out.append({"target": desc, "workload": wname, "row": rname,
                    "key": key, "value": value, "spread": spread,
                    "limit": limit, "unit": unit, "met": bool(met or same),
                    "same_program": bool(same),
                    "floor_ratio": (row.get("flatten_floor_ratio")
                                    if key == "flatten_ratio" else None),
                    "floor_no_meta_ratio": (
                        row.get("flatten_floor_no_meta_ratio")
                        if key == "flatten_ratio" else None)})
  return out


def run_benchmarks(cfg: Config) -> Dict[str, Any]:
  """Runs `cfg` and returns the results (see `markdown`)."""
  families = list(dict.fromkeys(["haiku", *cfg.frameworks]))
  avail = availability(families)
  skipped = {f: r for f, r in avail.items() if r is not None}
  for family, reason in skipped.items():
    _log(f"SKIPPED {family}: {reason}")
  runnable = [f for f, r in avail.items() if r is None]
  meta = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "python": platform.python_version(),
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
      "device": str(jax.devices()[0]),
      "versions": _versions(),
      "config": dataclasses.asdict(cfg),
      "skipped": skipped,
      "command": " ".join(["python3 -m tools.bench.run_all", *sys.argv[1:]]),
  }
  results = {"meta": meta, "workloads": {}}
  measure.set_sample_clock(cfg.clock)
  start = time.perf_counter()
  for name in cfg.workloads:
    if name not in wl_lib.WORKLOADS:
      raise ValueError(f"unknown workload {name!r}; choose from "
                       f"{', '.join(wl_lib.WORKLOADS)}")
    results["workloads"][name] = run_workload(cfg, wl_lib.WORKLOADS[name],
                                              runnable)
  meta["wall_s"] = time.perf_counter() - start
  meta["load_average_end"] = (os.getloadavg() if hasattr(os, "getloadavg")
                              else None)
  results["targets"] = evaluate_targets(results)
  return results


def _versions() -> Dict[str, Optional[str]]:
  import haiku  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import pax_haiku  # pylint: disable=g-import-not-at-top
  return {"jax": jax.__version__, "jaxlib": jax.lib.__version__
          if hasattr(jax.lib, "__version__") else None,
          "dm-haiku": haiku.__version__, "optax": optax.__version__,
          "pax_haiku": pax_haiku.__version__,
          "equinox": peers_equinox.version(), "flax": peers_nnx.version(),
          "pax3": peers_pax.version()}


def _fmt(value: Any, digits: int = 3) -> str:
  if value is None:
    return "—"
  if isinstance(value, int):
    return str(value)
  if value >= 100:
    return f"{value:.0f}"
  return f"{value:.{digits}g}"


def _ratio(row: Dict[str, Any], key: str, decimals: int = 2) -> str:
  value = row.get(f"{key}_ratio")
  if value is None:
    return "—"
  cell = f"{value:.{decimals}f}"
  spread = row.get(f"{key}_ratio_spread")
  if spread is not None and row.get("family") != "haiku":
    cell += f" ±{spread:.{decimals}f}"
  return cell


def _hlo_ratio(row: Dict[str, Any]) -> str:
  value = row["hlo_ratio"]
  cell = f"{value:.2f}"
  if value != 1.0 and cell == "1.00":
    cell = f"{value:.5f}"
  return cell


def table_rows(wres: Dict[str, Any]) -> List[List[str]]:
  """The cells of one workload's table, in `COLUMNS` order."""
  out = []
  for name, r in wres["rows"].items():
    out.append([
        name, _fmt(r["eager_ms"]), _ratio(r, "eager", 3),
        _fmt(r.get("scan_ms_per_step")), _ratio(r, "scan", 3),
        _fmt(r["compile_s"]), _ratio(r, "compile"),
        _fmt(r["hlo_instructions"]), _hlo_ratio(r),
        _fmt(r.get("flatten_us")), _ratio(r, "flatten"),
        _fmt(r.get("params_us")), f"{r['first_loss']:.6f}"])
  return out


def markdown(results: Dict[str, Any]) -> str:
  """The Markdown report."""
  meta = results["meta"]
  cfg = meta["config"]
  v = meta["versions"]
  lines = ["# Benchmarks: pax_haiku vs raw Haiku, Equinox, Flax NNX, PAX", ""]
  lines.append(
      "Generated by `" + meta["command"] + "` on " + meta["date"] + " (" +
      f"{meta['cpu_count']} CPU cores, {meta['device']}, load average at "
      f"start {_load(meta['load_average'])}, at end "
      f"{_load(meta.get('load_average_end'))}; total "
      f"{meta.get('wall_s', 0):.0f} s)." +
      (" **Quick mode: too few samples for meaningful numbers.**"
       if cfg["quick"] else "") +
      (" Eager and fused-scan times are this process's **CPU time** "
       "(`--clock=process`), not wall time." if cfg.get("clock") == "process"
       else ""))
  lines.append("")
  lines.append(
      f"Versions: jax {v['jax']}, dm-haiku {v['dm-haiku']}, optax "
      f"{v['optax']}, pax_haiku {v['pax_haiku']}; peers: equinox "
      f"{v['equinox'] or 'not installed'}, flax {v['flax'] or 'not installed'}"
      f", pax3 {v['pax3'] or 'not installed'}. Peers are optional benchmark "
      "dependencies, not in requirements.txt: `pip install equinox==0.13.8 "
      "flax==0.12.8` (flax 0.12.9+ needs Python >= 3.12; neither changes "
      "the pinned jax).")
  lines.append("")
  if meta["skipped"]:
    lines.append("Skipped:")
    for family, reason in meta["skipped"].items():
      lines.append(f"- **{family}**: {reason}")
    lines.append("")
  lines += _targets_md(results)
  lines += donated_lib.donated_md(results)
  for name, wres in results["workloads"].items():
    lines += _workload_md(name, wres)
  lines += _method_md(cfg)
  return "\n".join(lines) + "\n"


def _same_program_md(hv: Dict[str, Any]) -> str:
  """One sentence: are the compiled programs the same up to names?"""
  def yes_no(value):
    return "yes" if value else "**no**"
  text = (f"Same compiled program as raw Haiku up to argument names: step "
          f"{yes_no(hv.get('same_program'))}, fused scan "
          f"{yes_no(hv.get('scan_same_program'))}")
  if "same_program_in_pax_leaf_order" in hv:
    text += (
        "; raw Haiku's step fed its params in pax_haiku's leaf order "
        "(pax_haiku's leaves follow attribute order, Haiku's dicts sort "
        "module names as strings: `linear_10` before `linear_2`, `linear` "
        f"before `lstm`): {yes_no(hv['same_program_in_pax_leaf_order'])}")
  return text + "."


def _load(value) -> str:
  return "?" if not value else "/".join(f"{x:.1f}" for x in value)


def _target_workload(t: Dict[str, Any]) -> str:
  row = t.get("row", "pax_haiku")
  return t["workload"] if row == "pax_haiku" else (
      f"{t['workload']} `{row.replace('pax_haiku ', '')}`")


def _targets_md(results) -> List[str]:
  targets = results["targets"]
  if not targets:
    return []
  lines = ["## pax_haiku against its targets (ratios to raw Haiku + optax)",
           "", "| target | workload | measured | met |", "|---|---|---|---|"]
  for t in targets:
    if t["unit"] == "µs":
      value = f"{t['value']:.1f} µs"
    elif t["key"] == "hlo_ratio":
      row = results["workloads"][t["workload"]]["rows"]
      mine = row[t.get("row", "pax_haiku")]
      ref = mine.get("reference", "haiku")
      value = (f"{mine['hlo_instructions']} vs "
               f"{row[ref]['hlo_instructions']} instructions" +
               (f" ({ref})" if ref != "haiku" else ""))
    else:
      spread = t.get("spread")
      value = f"{t['value']:.3f}x" + (
          f" ±{spread:.3f}" if spread is not None else "")
    if t.get("floor_ratio") is not None:
      no_meta = t.get("floor_no_meta_ratio")
      value += f" (JAX floor {t['floor_ratio']:.2f}x" + (
          f"; {no_meta:.2f}x without the meta field" if no_meta is not None
          else "") + ")"
    met = "yes" if t["met"] else "**no**"
    if t.get("same_program"):
      met += " (same compiled program as raw Haiku)"
    lines.append(f"| {t['target']} | {_target_workload(t)} | {value} | "
                 f"{met} |")
  counts = []
  for rname in dict.fromkeys(t.get("row", "pax_haiku") for t in targets):
    mine = [t for t in targets if t.get("row", "pax_haiku") == rname]
    counts.append(f"{rname}: {sum(t['met'] for t in mine)} of {len(mine)} "
                  "met")
  lines += ["", "; ".join(counts) + ". The `pax_haiku` row builds MLPs as "
            "`pax.Sequential` of `pax.Linear` and `jax.nn.relu` (the PAX "
            "idiom: one pytree node per layer); `pax_haiku [nets_mlp]` is "
            "`pax.nets.MLP`, one Haiku-backed module holding `hk.nets.MLP`'s "
            "params. *JAX floor*: the same tree of nodes built from bare "
            "`jax.tree_util.register_dataclass` classes with no pax code "
            "(`tools/bench/dataclass_floor.py`), as a ratio to the Haiku "
            "dict. JAX rebuilds a dataclass node by calling its class with "
            "keyword arguments, dearer than building a dict, and a model "
            "with one node per layer (function layers included) has more "
            "nodes than Haiku's dicts: such a tree costs more than the dicts "
            "however little pax adds. *Without the meta field*: the same "
            "floor with no aux data per node; a pax node's aux data is its "
            "layout (class, field names, static values), which jit's caches "
            "must compare (`tests/module_test.py`, "
            "`test_jit_keeps_layouts_apart`). "
            "Timing ratios are medians "
            "of per-round ratios to bracketing raw-Haiku samples, ± half "
            "their interquartile range: a miss by less than its ± is not "
            "resolved by this run (a shared, busy machine). A fused scan "
            "counts as met when it compiles to raw Haiku's program up to "
            "argument names (see each workload's HLO line): both then run "
            "the same machine code.", ""]
  return lines


def _over_floor(row: Dict[str, Any]) -> float:
  """Median over rounds of the row's flatten time over its JAX floor's.

  Both are sampled in the same rounds; per-round ratios cancel this
  machine's speed modes (samples of one case can differ 2x between rounds),
  which a ratio of the two medians would not.
  """
  return measure.median([
      a / b for a, b in zip(row["flatten_samples_us"],
                            row["flatten_floor_samples_us"])])


def _workload_md(name: str, wres: Dict[str, Any]) -> List[str]:
  lines = [f"## {name}: {wres['title']}", "",
           f"{wres['num_parameters']:,} parameters. Eager: "
           f"{wres['eager_steps_per_sample']} steps per sample, "
           f"{wres['eager_rounds']} rounds. Fused scan: "
           f"{wres['scan_steps']} steps in one `jax.lax.scan`, "
           f"{wres['scan_rounds']} rounds. Compile: "
           f"{wres['compile_rounds']} round(s)" + (
               f" ({wres['compile_rounds_pax_haiku']} for raw Haiku and "
               "pax_haiku)" if wres.get("compile_rounds_pax_haiku", 0) >
               wres["compile_rounds"] else "") + ".", ""]
  lines.append("| " + " | ".join(COLUMNS) + " |")
  lines.append("|" + "---|" * len(COLUMNS))
  for cells in table_rows(wres):
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  bad = [n for n, ok in wres["loss_check"].items() if not ok]
  lines.append("First-step losses agree with raw Haiku (same weights, same "
               "batch) to 1e-5: " +
               ("yes, every row." if not bad else
                "**no** for " + ", ".join(bad) + "."))
  gcs = [f"{n} {'/'.join(_fmt(float(c)) for c in r['gc_collections_per_1000_steps'])}"
         for n, r in wres["rows"].items()
         if r.get("gc_collections_per_1000_steps") is not None]
  if gcs:
    lines.append("")
    lines.append("Python garbage collections per 1000 eager steps (generation "
                 "0/1/2): " + ", ".join(gcs) + ".")
  args = [(n, r) for n, r in wres["rows"].items()
          if r.get("args_flatten_us") is not None]
  if args:
    lines.append("")
    lines.append(
        "Flatten+unflatten of everything the step receives (model, "
        "optimizer state, batch; what `jax.jit` does at every call), µs: "
        + ", ".join(f"{n} {_fmt(r['args_flatten_us'])}"
                    + (f" ({r['args_flatten_ratio']:.2f}x)"
                       if r.get("args_flatten_ratio") is not None and
                       r["family"] != "haiku" else "")
                    for n, r in args) + ".")
  floors = [(n, r) for n, r in wres["rows"].items()
            if r.get("flatten_floor_us") is not None and r.get("flatten_us")]
  if floors:
    lines.append("")
    lines.append(
        "JAX floor of the model's flatten+unflatten (the same node "
        "structure as bare `register_dataclass` classes, no pax code): "
        + ", ".join(
            f"{n} {_fmt(r['flatten_floor_us'])} µs ("
            + (f"{r['flatten_floor_ratio']:.2f}x the Haiku dict; "
               if r.get("flatten_floor_ratio") is not None else "")
            + f"{n} is {_over_floor(r):.2f}x it"
            + (f"; without the meta field: "
               f"{_fmt(r['flatten_floor_no_meta_us'])} µs"
               if r.get("flatten_floor_no_meta_us") is not None else "")
            + ")" for n, r in floors) + ".")
  hv = wres.get("hlo_pax_vs_haiku")
  if hv:
    lines.append("")
    if hv["identical_count"]:
      lines.append(f"HLO: pax_haiku's step compiles to exactly as many "
                   f"instructions as raw Haiku's ({hv['haiku']}); fused "
                   f"scans: {hv['scan_pax_haiku']} vs {hv['scan_haiku']}. "
                   + _same_program_md(hv))
    else:
      lines.append(
          f"HLO: **pax_haiku {hv['pax_haiku']} vs raw Haiku {hv['haiku']} "
          f"instructions** (opcodes: {hv['opcode_difference']}); "
          f"{hv['diagnosis']} Fused scans: {hv['scan_pax_haiku']} vs "
          f"{hv['scan_haiku']}.")
  for n, r in wres["rows"].items():
    if r.get("eager_ratio_to_reference") is None:
      continue
    ref = r["reference"]
    same = (wres.get("same_program") or {}).get(n, {}).get("step")
    lines += ["", f"Donated steps: `{n}` (`pax.jit_update`) runs at "
              f"{r['eager_ratio']:.3f}x raw Haiku's plain step and "
              f"{r['eager_ratio_to_reference']:.3f}x "
              f"±{r['eager_ratio_to_reference_spread']:.3f} `{ref}` "
              f"(per-round ratios); same compiled program as `{ref}` up to "
              f"argument names: {'yes' if same else '**no**'}."]
  fl = wres.get("floor")
  if fl:
    steps = ", ".join(f"{n} {fl['step_over_floor'][n]:.2f}x"
                      for n in fl["step_ms"])
    xla = (f"; XLA's cost analysis counts {fl['xla_flops'] / 1e9:.3f} GFLOP"
           if fl.get("xla_flops") else "")
    lines += ["", f"Arithmetic floor: one step's matmuls are "
              f"{fl['matmul_flops'] / 1e9:.3f} GFLOP{xla}. A plain `jnp.dot` "
              f"benchmark of exactly those matmuls (same shapes, interleaved "
              f"with the rounds above) runs at "
              f"{fl['dot_gflops_per_s']:.1f} GFLOP/s, so the floor is "
              f"{fl['floor_ms']:.2f} ms per step. Eager step / floor: "
              f"{steps}."]
  lines.append("")
  return lines


def _method_md(cfg: Dict[str, Any]) -> List[str]:
  return [
      "## Method", "",
      "- One process, every framework; the same architecture, the same "
      "initial weights (created by raw Haiku's `init`, loaded into every "
      "framework) and the same batches; softmax cross-entropy and "
      "`optax.adam(1e-3)` everywhere. Peers restate Haiku's math "
      "(`tools/bench/workloads.py`) with one module per layer.",
      "- Raw Haiku: `jax.jit` of a hand-written `(params, state, opt_state, "
      "x, y) -> (params, state, opt_state, loss)` with `jax.value_and_grad` "
      "of `hk.transform_with_state(f).apply`. pax_haiku: "
      "`jax.jit(pax.build_update_fn(loss_fn))`, called as `model, opt, loss "
      "= step(model, opt, x, y)`; W1/W2/Wdeep are `pax.Sequential` of "
      "`pax.Linear` and `jax.nn.relu`, W3 `pax.nets.TransformerLM`, W4 "
      "`pax.LSTM` unrolled by `pax.scan` (raw Haiku: `hk.nets.MLP`, the "
      "reference `haiku_transformer.TransformerLM`, `hk.LSTM` with "
      "`hk.dynamic_unroll`).",
      "- Donated rows (`--donated`): `haiku (donated)` is raw Haiku's step "
      "jitted with `donate_argnums=(0, 1, 2)` (params, state, optimizer "
      "state); `pax_haiku (donated)` is the recommended "
      "`pax.jit_update(pax.build_update_fn(loss_fn))` (the model and the "
      "optimizer donated). Both reuse their inputs' buffers for the outputs; "
      "each starts from its own copy of the initial weights. The pax_haiku "
      "donated row's HLO is compared with raw Haiku's donated step's, and "
      "its eager time also as a ratio to it (per round). No fused-scan "
      "column: a scan is one call, its carry donated or not.",
      "- Eager step: a jitted train step called from a Python loop "
      "(argument flatten/unflatten and dispatch included), timed over "
      "several steps up to `block_until_ready`; frameworks interleaved "
      f"with raw Haiku ({cfg['rounds']} rounds; in each, raw Haiku runs "
      "before, between and after the other frameworks, in a shuffled "
      "order). Times are medians; a ratio (`×`) is the median over rounds "
      "of a sample divided by the mean of the two raw-Haiku samples taken "
      "just before and after it, which cancels most of the load changes of "
      "a shared machine; `±` is half the interquartile range of those "
      "per-round ratios (compile: ratios within a round, where raw Haiku "
      "and pax_haiku always compile back to back).",
      "- Fused scan: the steps of one `jax.lax.scan` in one jitted call "
      "(pax_haiku: `build_update_fn(loss_fn, scan_mode=True)`); one calling "
      "style per peer (the `jax.jit` / split-merge one: a single call of a "
      f"long scan does not depend on the wrapper). At most "
      f"{cfg['scan_steps']} steps; heavy workloads use fewer steps and "
      "rounds to fit the time budget (stated per workload).",
      "- Compile: seconds of the first call of a freshly built jitted step "
      "(trace + lower + XLA compile + one step), a new Python function each "
      "round so no JAX cache is reused. Before the first round every step "
      "is traced and lowered once (not compiled): that warms JAX's caches "
      "of the inner jitted functions all frameworks share (`jax.nn.relu`, "
      "optax internals), which would otherwise bill whichever framework "
      "compiles first.",
      "- HLO instr.: instructions of the optimized HLO module "
      "(`jitted.lower(...).compile().as_text()`, all computations).",
      "- flatten+unflatten: `jax.tree_util` round trip of the model (raw "
      "Haiku: its params dict; NNX nnx.jit row: `nnx.split` + `nnx.merge`; "
      "NNX split/merge row: the `nnx.State`). params out+in: pax_haiku "
      "`model.parameters()` + `model.update_parameters(new)`; Equinox "
      "`eqx.partition` + `eqx.combine`; NNX `nnx.state(model, nnx.Param)` "
      "+ `nnx.update`. Both with `timeit`, interleaved, medians.",
      "- Python garbage collections: counted (per generation) during the "
      "eager rounds. A step whose outputs rebuild more than ~700 GC-tracked "
      "Python objects (pytree nodes and their `__dict__`s) triggers a "
      "generation-0 collection every step, and in time full collections "
      "that walk every live Python object (~0.1 s here); `--gc_freeze` "
      "runs the eager rounds after `gc.freeze()` to show that cost.",
      "- The JSON file holds every sample, the flatten cost of the whole "
      "step arguments (`args_flatten_us`), compile times of the scans and "
      "the opcode histograms' differences.", ""]


def config_from_flags() -> Config:
  overrides = {"workloads": tuple(_WORKLOADS.value),
               "frameworks": tuple(_FRAMEWORKS.value),
               "pax_variants": _PAX_VARIANTS.value,
               "donated": _DONATED.value, "clock": _CLOCK.value,
               "gc_freeze": _GC_FREEZE.value, "hlo_dir": _HLO_DIR.value}
  for flag, key in ((_ROUNDS, "rounds"), (_COMPILE_ROUNDS, "compile_rounds"),
                    (_SCAN_STEPS, "scan_steps")):
    if flag.value is not None:
      overrides[key] = flag.value
  cfg = (Config.quick_config(**overrides) if _QUICK.value else
         Config(**overrides))
  scale = _BUDGET_SCALE.value
  cfg.compile_budget_s *= scale
  cfg.scan_budget_s *= scale
  cfg.scan_sample_s *= scale
  return cfg


def main(argv):
  del argv
  measure.compile_for_real()
  cfg = config_from_flags()
  results = run_benchmarks(cfg)
  text = markdown(results)
  print(text)
  if _OUT.value:
    # The sections other commands write (`tools.bench.startup --out`) stay.
    text = report_sections.keep_sections(
        text, report_sections.read(_OUT.value), report_sections.NOT_RUN_ALLS)
    with open(_OUT.value, "w", encoding="utf-8") as f:
      f.write(text)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(results, f, indent=1, default=_json_default)
  return 0


def _json_default(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return str(value)


if __name__ == "__main__":
  app.run(main)
