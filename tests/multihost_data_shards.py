"""Each process's share of the training batches; run by multihost_test.py.

Usage (one line per process, same port):
  python tests/multihost_data_shards.py 127.0.0.1:PORT NUM_PROCESSES \
      PROCESS_ID OUT_DIR

Builds the trainer's data pipeline for configs/smoke.py exactly as
`train_lib.train_and_evaluate` does on this process (mesh over every
device of every process, `process_rows`, `pipeline.TrainPipeline`) and
writes `OUT_DIR/process_<i>.json`: the rows it reads and the source indices
of its part of the first 12 global batches.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pax_haiku as pax  # pylint: disable=g-import-not-at-top,wrong-import-position
from tools.trainer import pipeline  # pylint: disable=wrong-import-position
from tools.trainer import train_lib  # pylint: disable=wrong-import-position
from configs import smoke  # pylint: disable=wrong-import-position

NUM_BATCHES = 12


def main():
  address, num_processes, process_id, out_dir = sys.argv[1:5]
  if not pax.sharding.initialize_distributed(address, int(num_processes),
                                             int(process_id)):
    raise SystemExit("jax.distributed did not start")
  config = smoke.get_config()
  mesh = train_lib.make_mesh(config)
  rows = train_lib.process_rows(mesh, config.batch_size)
  train_source, _ = train_lib.load_dataset(config)
  data = pipeline.TrainPipeline(train_source,
                                global_batch_size=config.batch_size,
                                seed=config.seed, rows=rows)
  indices = [data.indices(b).tolist() for b in range(NUM_BATCHES)]
  # What the loop reads is what `indices` says.
  inputs, _ = data.next_chunk(NUM_BATCHES)
  want, _ = train_source.read_batch(indices)
  same = bool((inputs == want).all())
  with open(os.path.join(out_dir, f"process_{process_id}.json"), "w") as f:
    json.dump({"rows": rows, "indices": indices, "read_matches": same}, f)
  print("ALL OK")


if __name__ == "__main__":
  main()
