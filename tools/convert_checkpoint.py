r"""Converts a workdir's old-format checkpoints to orbax checkpoints, once.

The trainer's first checkpoint format (`checkpoints/ckpt_<step>/arrays.npz`
+ `metadata.json`) stored the leaves of `(model, optimizer)` by flatten
position. This command rebuilds the model and optimizer from the config the
run was trained with, checks every old leaf against them (count, shape,
dtype), and writes each old checkpoint as an orbax checkpoint with
Haiku-named arrays (`checkpoints/<step>/`, see docs/checkpoints.md). The old
directories are left in place; delete them once the run resumes.

  python3 tools/convert_checkpoint.py --config=configs/digits_mlp.py \
      --workdir=/tmp/pax_haiku_runs/digits_mlp

Pass the same `--config.key=value` overrides as the training run.
"""

import os
import sys
from typing import Sequence

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

import pax_haiku as pax
from tools.trainer import checkpoint
from tools.trainer import checkpoint_legacy
from tools.trainer import config_schema
from tools.trainer import models

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The config file the run was trained with (configs/).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The training run's workdir (holds checkpoints/).")


def convert(config, workdir: str) -> Sequence[int]:
  """Converts every old checkpoint of `workdir`; returns their steps.

  Raises:
    ValueError: if there is nothing to convert, or an old checkpoint does
      not match the model and optimizer of `config`.
  """
  config_schema.validate(config)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = checkpoint_legacy.legacy_steps(ckpt_dir)
  if not steps:
    raise ValueError(
        f"No old-format checkpoints (ckpt_<step>/metadata.json) in "
        f"{ckpt_dir}.\nFix: pass the --workdir of the training run to "
        "convert.")
  model = models.build_model(config)
  optimizer = pax.from_optax(models.make_optimizer(config))(model.parameters())
  # Checkpoints older than the gradient-norm metric hold the optimizer chain
  # without `record_grad_norm`; they get its initial state.
  before_norm = pax.from_optax(models.make_optimizer(config, record_norm=False))(
      model.parameters())
  like_leaves, treedef = jax.tree_util.tree_flatten((model, optimizer))
  old_like_leaves, old_treedef = jax.tree_util.tree_flatten(
      (model, before_norm))
  done = set()
  for step in checkpoint.checkpoint_steps(ckpt_dir):
    try:
      checkpoint.verify(ckpt_dir, step)
      done.add(step)
    except checkpoint.CheckpointError:
      pass
  for step in steps:
    if step in done:  # Converted by an earlier run of this command.
      continue
    old = checkpoint_legacy.read(ckpt_dir, step)
    without_norm = len(old.leaves) == len(old_like_leaves) != len(like_leaves)
    want_leaves, want_treedef = ((old_like_leaves, old_treedef) if without_norm
                                 else (like_leaves, treedef))
    if len(old.leaves) != len(want_leaves):
      raise ValueError(
          f"ckpt_{step} has {len(old.leaves)} arrays but the model and "
          f"optimizer of this config have {len(like_leaves)}.\nFix: pass the "
          "config (and --config overrides) the run was trained with.")
    for i, (got, want) in enumerate(zip(old.leaves, want_leaves)):
      if got.shape != tuple(want.shape) or got.dtype != np.dtype(want.dtype):
        raise ValueError(
            f"ckpt_{step}: array {i} ({old.specs[i]['path']}) has shape "
            f"{got.shape} dtype {got.dtype}, but this config expects shape "
            f"{tuple(want.shape)} dtype {np.dtype(want.dtype)}.\nFix: pass "
            "the config (and --config overrides) the run was trained with.")
    model, restored = jax.tree_util.tree_unflatten(want_treedef, old.leaves)
    if without_norm:
      restored = optimizer.replace(opt_state=(optimizer.opt_state[0],) +
                                   tuple(restored.opt_state))
    checkpoint.save(ckpt_dir, step, {"model": model, "optimizer": restored},
                    old.metadata, keep=None)
  return steps


def main(argv):
  if len(argv) > 1:
    print(f"error: unexpected arguments {argv[1:]}; usage: python3 "
          "tools/convert_checkpoint.py --config=CONFIG --workdir=WORKDIR",
          file=sys.stderr)
    return 2
  if _CONFIG.value is None or not _WORKDIR.value:
    print("error: --config and --workdir are required, e.g. python3 "
          "tools/convert_checkpoint.py --config=configs/digits_mlp.py "
          "--workdir=/tmp/pax_haiku_runs/digits_mlp", file=sys.stderr)
    return 2
  try:
    steps = convert(_CONFIG.value, os.path.abspath(_WORKDIR.value))
  except (ValueError, TypeError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"Converted checkpoints of steps {list(steps)} in "
        f"{os.path.join(_WORKDIR.value, 'checkpoints')}; the old ckpt_<step> "
        "directories are kept (delete them once the run resumes).")
  return 0


if __name__ == "__main__":
  app.run(main)
