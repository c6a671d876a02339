r"""Save time of the digits_cnn checkpoint: orbax format vs the old format.

Side by side in one process, interleaved round by round, on the model and
optimizer of configs/digits_cnn.py (as the binary checkpoints them):

* `old`: the trainer's first format (`checkpoint_legacy.write`: arrays to
  the host, one `.npz`, sha256, metadata JSON, fsync'ed, renamed);
* `orbax_sync`: `checkpoint.CheckpointManager(async_save=False).save`:
  orbax commit, then the integrity manifest (sha256 of every file), then
  pruning to the newest 3;
* `orbax_async_blocking`: what the training loop waits for with the
  binary's `async_save=True` (the previous save is finished outside the
  timer, as it would be during the training steps in between);
* `orbax_async_total`: the same save until its commit and manifest are done.

Prints one JSON object with the median seconds of each and the ratios to
`old` (the issue's target: `orbax_sync / old` and the binary's
`orbax_async_blocking / old` at most 1.5).

  python3 -m tools.bench.checkpoint_bench --rounds=20
"""

import json
import os
import shutil
import statistics
import tempfile
import time
from typing import Dict

from absl import app
from absl import flags
import jax

import pax_haiku as pax
from configs import digits_cnn
from tools.trainer import checkpoint
from tools.trainer import checkpoint_legacy
from tools.trainer import models

_ROUNDS = flags.DEFINE_integer("rounds", 20, "Saves of each kind.")


def build():
  config = digits_cnn.get_config()
  model = models.build_model(config)
  optimizer = pax.from_optax(models.make_optimizer(config))(model.parameters())
  mesh = pax.sharding.make_mesh(1)
  return pax.sharding.replicate({"model": model, "optimizer": optimizer},
                                mesh)


def measure(rounds: int = 20) -> Dict[str, float]:
  """Median save seconds of each kind and their ratios to the old format."""
  tree = build()
  meta = {"data": {"epoch": 3, "index": 96}, "config_hash": "0" * 64}
  root = tempfile.mkdtemp(prefix="checkpoint_bench_")
  times = {"old": [], "orbax_sync": [], "orbax_async_blocking": [],
           "orbax_async_total": []}
  try:
    sync = checkpoint.CheckpointManager(os.path.join(root, "sync"), keep=3)
    background = checkpoint.CheckpointManager(os.path.join(root, "async"),
                                              keep=3, async_save=True)
    old_dir = os.path.join(root, "old")
    for step in range(1, rounds + 2):  # Round 1 warms up (not counted).
      t0 = time.perf_counter()
      checkpoint_legacy.write(old_dir, step, tree, meta)
      for old in checkpoint_legacy.legacy_steps(old_dir)[:-3]:
        shutil.rmtree(os.path.join(old_dir, f"ckpt_{old}"))
      t1 = time.perf_counter()
      sync.save(step, tree, meta)
      t2 = time.perf_counter()
      background.save(step, tree, meta)
      t3 = time.perf_counter()
      background.wait_until_finished()
      t4 = time.perf_counter()
      if step > 1:
        times["old"].append(t1 - t0)
        times["orbax_sync"].append(t2 - t1)
        times["orbax_async_blocking"].append(t3 - t2)
        times["orbax_async_total"].append(t4 - t2)
    sync.close()
    background.close()
    nbytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(tree))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  out = {f"{k}_s": statistics.median(v) for k, v in times.items()}
  for k in ("orbax_sync", "orbax_async_blocking", "orbax_async_total"):
    out[f"{k}_over_old"] = out[f"{k}_s"] / out["old_s"]
  out.update(rounds=rounds, checkpoint_bytes=nbytes,
             jax_devices=jax.device_count())
  return out


def main(argv):
  del argv
  print(json.dumps(measure(_ROUNDS.value), indent=1, sort_keys=True))


if __name__ == "__main__":
  app.run(main)
