"""Timing, statistics and HLO helpers shared by the benchmarks."""

import collections
import random
import re
import statistics
import time
import timeit
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax

_INSTRUCTION = re.compile(r"^(?:ROOT\s+)?%?[\w.\-]+\s*=\s*")


# The clock of eager and fused-scan samples: wall time, or this process's CPU
# time (every thread's, XLA's included: `run_all --clock=process`), which the
# load of other processes on a shared machine does not inflate.
SAMPLE_CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
_sample_clock = [time.perf_counter]


def set_sample_clock(name: str) -> None:
  """Selects the clock of `sample_clock()`: `wall` or `process`."""
  if name not in SAMPLE_CLOCKS:
    raise ValueError(f"unknown clock {name!r}; choose from "
                     f"{', '.join(SAMPLE_CLOCKS)}")
  _sample_clock[0] = SAMPLE_CLOCKS[name]


def sample_clock() -> float:
  """Seconds on the selected sample clock (see `set_sample_clock`)."""
  return _sample_clock[0]()


def compile_for_real() -> None:
  """Turns off a persistent compilation cache set from the environment.

  The benchmarks time compilations; with `JAX_COMPILATION_CACHE_DIR` set
  (as `tools/test.sh` sets it for the test suite) JAX would read compiled
  programs from disk instead. Call before the first compilation.

  >>> compile_for_real()
  >>> jax.config.jax_compilation_cache_dir is None
  True
  """
  jax.config.update("jax_compilation_cache_dir", None)


def block(tree: Any) -> None:
  """Waits for every array in `tree`."""
  jax.block_until_ready(jax.tree_util.tree_leaves(tree))


def timed(fn: Callable[[], Any]) -> float:
  """Seconds taken by `fn()`, including waiting for its array outputs."""
  start = time.perf_counter()
  block(fn())
  return time.perf_counter() - start


def per_call_us(fn: Callable[[], Any], number: int) -> float:
  """Microseconds per call of a Python-only function (`timeit`)."""
  return timeit.timeit(fn, number=number) / number * 1e6


def interleaved(cases: Dict[str, Callable[[], float]], rounds: int,
                seed: int = 0, adjacent: Sequence[str] = ()
                ) -> Dict[str, List[float]]:
  """Runs every case once per round, in a shuffled order each round.

  Args:
    cases: name -> function returning one sample (e.g. seconds per step).
    rounds: number of rounds.
    seed: seed of the per-round order shuffle.
    adjacent: names (present in `cases`) that always run back to back, in a
      shuffled order, so that their per-round ratios see the same load.

  Returns:
    name -> samples (one per round, in round order).
  """
  group = [n for n in adjacent if n in cases]
  units = [[n] for n in cases if n not in group] + ([group] if group else [])
  rng = random.Random(seed)
  samples: Dict[str, List[float]] = {k: [] for k in cases}
  for _ in range(rounds):
    rng.shuffle(units)
    for unit in units:
      rng.shuffle(unit)
      for name in unit:
        samples[name].append(cases[name]())
  return samples


def bracketed(cases: Dict[str, Callable[[], float]], baseline: str,
              rounds: int, seed: int = 0
              ) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
  """Interleaves every case with the baseline: `B X1 B X2 B ... Xn B`.

  Each round runs the non-baseline cases in a shuffled order with a
  baseline sample before the first, between every two, and after the last.
  A case's ratio for the round is its sample over the mean of the two
  baseline samples next to it in time, so slow load changes on a shared
  machine cancel out far better than with medians of each side alone.

  Args:
    cases: name -> function returning one sample; must include `baseline`.
    baseline: the name of the baseline case.
    rounds: number of rounds.
    seed: seed of the per-round order shuffle.

  Returns:
    `(samples, ratios)`: name -> every sample (the baseline's too), and
    name -> per-round ratios to the bracketing baseline samples (the
    baseline's ratios are all 1).
  """
  others = [n for n in cases if n != baseline]
  rng = random.Random(seed)
  samples: Dict[str, List[float]] = {k: [] for k in cases}
  ratios: Dict[str, List[float]] = {k: [] for k in cases}
  for _ in range(rounds):
    rng.shuffle(others)
    before = cases[baseline]()
    samples[baseline].append(before)
    for name in others:
      value = cases[name]()
      after = cases[baseline]()
      samples[name].append(value)
      samples[baseline].append(after)
      ratios[name].append(value / ((before + after) / 2))
      before = after
    ratios[baseline].append(1.0)
  return samples, ratios


def spread(values: Sequence[float]) -> Optional[float]:
  """Half the interquartile range (a robust +- for a median)."""
  if len(values) < 2:
    return None
  q = statistics.quantiles(values, n=4, method="inclusive")
  return (q[2] - q[0]) / 2


def median(values: Sequence[float]) -> Optional[float]:
  return statistics.median(values) if values else None


def paired_ratio(samples: Sequence[float],
                 baseline: Sequence[float]) -> Optional[float]:
  """Median over rounds of `sample / baseline` measured in the same round.

  Pairing cancels slow drifts of the machine's load, which medians of each
  side alone do not.
  """
  ratios = [s / b for s, b in zip(samples, baseline) if b]
  return statistics.median(ratios) if ratios else None


def hlo_instructions(hlo_text: str) -> List[str]:
  """The opcode of every instruction of an HLO module's text, in order.

  Counts the instructions of all computations (entry, fused, while bodies,
  reducers). The opcode is the word before the operand list, after the
  result shape (which may be a tuple shape with spaces).
  """
  opcodes = []
  for line in hlo_text.splitlines():
    line = line.strip()
    m = _INSTRUCTION.match(line)
    if not m or line.startswith(("HloModule", "//")):
      continue
    rest = line[m.end():]
    if rest.startswith("("):  # Tuple shape: skip to its closing paren.
      depth = 0
      for i, ch in enumerate(rest):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
          rest = rest[i + 1:]
          break
    else:
      rest = rest.split(" ", 1)[1] if " " in rest else ""
    opcodes.append(rest.strip().split("(", 1)[0].strip())
  return opcodes


def opcode_histogram(hlo_text: str) -> Dict[str, int]:
  return dict(sorted(collections.Counter(hlo_instructions(hlo_text)).items()))


def histogram_difference(a: Dict[str, int],
                         b: Dict[str, int]) -> Dict[str, int]:
  """`a - b` per opcode, only the opcodes whose counts differ."""
  return {k: a.get(k, 0) - b.get(k, 0) for k in sorted(set(a) | set(b))
          if a.get(k, 0) != b.get(k, 0)}


def normalized_program(hlo_text: str) -> str:
  """Optimized HLO text without names, source locations or metadata.

  Two programs whose normalized texts are equal run the same instructions
  on the same shapes in the same order: they differ at most in the names
  of their arguments (pax's `layers_0__weight` vs Haiku's `linear_0__w`).
  """
  text = re.sub(r"metadata=\{[^}]*\}", "", hlo_text)
  # GPU: a hash of the module (names included) before the scheduler runs.
  text = re.sub(r'fingerprint_before_lhs="[0-9a-f]*"', "", text)
  text = re.sub(r",? ?stack_frame_id=\d+", "", text)
  lines = [l for l in text.splitlines()
           if not re.match(r"^\s*\d+ ", l)  # File/function/frame tables.
           and not l.startswith(("FileNames", "FunctionNames",
                                 "FileLocations", "StackFrames"))]
  text = "\n".join(lines)
  text = re.sub(r"%[\w.\-]+", "%v", text)
  text = re.sub(r"\b[\w.\-]+(?=: [a-z]\d*\[)", "p", text)  # Arg names.
  return re.sub(r"HloModule \S+", "HloModule", text)


def same_program(hlo_a: str, hlo_b: str) -> bool:
  """Whether two optimized HLO texts are one program up to names."""
  return normalized_program(hlo_a) == normalized_program(hlo_b)


def compiled_text(lowered: Any) -> str:
  """Optimized HLO text of a `jax.stages.Lowered` (compiles if not cached).

  Also takes wrappers holding one in `.lowered` (Equinox's `filter_jit`).
  """
  lowered = getattr(lowered, "lowered", lowered)
  return lowered.compile().as_text()
