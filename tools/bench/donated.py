"""Donating steps: raw Haiku's and pax_haiku's recommended `pax.jit_update`.

Rows `haiku (donated)` and `pax_haiku (donated)` of `run_all`: the same
steps as the `haiku` and `pax_haiku` rows, jitted with the params (model)
and optimizer state donated, so XLA writes the new ones into the buffers of
the given ones. The pax_haiku row is compared with raw Haiku's donated step
(`reference`): same HLO, and its eager time as a ratio to it.
"""

from typing import Any, Dict, List

import jax
import jax.numpy as jnp

import pax_haiku as pax
from tools.bench import frameworks
from tools.bench import workloads as wl_lib


def fresh_copy(tree: Any) -> Any:
  """`tree` with every array copied into a new buffer.

  A donating step deletes the arrays it is given, and the rows share their
  initial weights: each donating run starts from its own copies.
  """
  return jax.tree_util.tree_map(jnp.copy, tree)


class HaikuDonatedImpl(frameworks.HaikuImpl):
  """Raw Haiku's step, `jax.jit(step, donate_argnums=(0, 1, 2))`: the new
  params, state and optimizer state reuse the given ones' buffers."""

  name = "haiku (donated)"
  # A single call of a many-step scan: donating its carry saves one copy per
  # scan, nothing measurable; the scans are the plain rows'.
  measures_scan = False

  def _build_step(self):
    return jax.jit(self._step_body(), donate_argnums=(0, 1, 2))

  def _initial_carry(self):
    return fresh_copy((self.params, self.state, self.opt_state))

  def flatten_case(self):
    return None  # The same params dict as the `haiku` row.

  def args_flatten_case(self):
    return None


class PaxHaikuDonatedImpl(frameworks.PaxHaikuImpl):
  """The recommended step, `pax.jit_update(pax.build_update_fn(loss_fn))`
  (`jax.jit` donating the model and the optimizer)."""

  name = "pax_haiku (donated)"
  reference = HaikuDonatedImpl.name
  measures_scan = False

  def _build_step(self):
    return pax.jit_update(pax.build_update_fn(frameworks.pax_loss_fn))

  def _initial_carry(self):
    return fresh_copy((self.model, self.optimizer))

  def flatten_case(self):
    return None  # The same model as the `pax_haiku` row.

  def flatten_floor_case(self, layout_field=True):
    return None

  def args_flatten_case(self):
    return None

  def params_case(self):
    return None


def donated_impls(workload: wl_lib.Workload, weights: wl_lib.Weights,
                  params: Any, state: Any, x: Any, y: Any, *,
                  pax_haiku: bool = True) -> List[frameworks.Impl]:
  """`haiku (donated)`, then `pax_haiku (donated)` (if `pax_haiku`)."""
  impls: List[frameworks.Impl] = [
      HaikuDonatedImpl(workload, weights, x, y, params=params, state=state)]
  if pax_haiku:
    impls.append(PaxHaikuDonatedImpl(workload, weights, x, y,
                                     haiku_params=params))
  return impls


def _ms(row: Dict[str, Any]) -> str:
  """`'1.44 (0.663x)'`: eager ms and the ratio to raw Haiku's plain step."""
  return f"{row['eager_ms']:.3g} ({row['eager_ratio']:.3f}x)"


def donated_md(results: Dict[str, Any]) -> List[str]:
  """The report's "Donated steps" section (empty without donated rows)."""
  table = []
  for wname, wres in results["workloads"].items():
    rows = wres["rows"]
    mine = rows.get(PaxHaikuDonatedImpl.name)
    if not mine or mine.get("eager_ratio_to_reference") is None:
      continue
    same = (wres.get("same_program") or {}).get(PaxHaikuDonatedImpl.name, {})
    table.append([
        wname, f"{rows['haiku']['eager_ms']:.3g}",
        _ms(rows[HaikuDonatedImpl.name]),
        _ms(rows["pax_haiku"]) if "pax_haiku" in rows else "—", _ms(mine),
        f"{mine['eager_ratio_to_reference']:.3f}x "
        f"±{mine['eager_ratio_to_reference_spread']:.3f}",
        "yes" if same.get("step") else "**no**"])
  if not table:
    return []
  return [
      "## Donated steps", "",
      "The recommended step, `pax.jit_update(pax.build_update_fn(loss_fn))`, "
      "donates the model and the optimizer: XLA writes the new ones into the "
      "buffers of the given ones (one copy of the parameters and optimizer "
      "state in memory; the given ones are consumed). Raw Haiku donated: "
      "`jax.jit(step, donate_argnums=(0, 1, 2))`. PAX's idiom "
      "`jax.jit(pax.build_update_fn(loss_fn))` (the `pax_haiku` column) "
      "keeps its inputs. Eager step in ms (ratio to raw Haiku's plain "
      "step); then pax_haiku donated over raw Haiku donated (median of "
      "per-round ratios ± half their IQR), and whether the two donating "
      "steps compile to the same program up to argument names.", "",
      "| workload | haiku (ms) | haiku donated | pax_haiku | pax_haiku "
      "donated | pax donated / haiku donated | same program |",
      "|---|---|---|---|---|---|---|"] + [
          "| " + " | ".join(c) + " |" for c in table] + [""]
