"""Reusable, tested parts of the pax_haiku training binary (tools/train.py).

* `tools.trainer.data`: download-free data sets and restorable batchers;
* `tools.trainer.checkpoint`: atomic, integrity-checked checkpoints;
* `tools.trainer.metrics`: metrics.jsonl + TensorBoard writer, console lines;
* `tools.trainer.plotting`: training/eval curves as a PNG.

Import the submodules directly (`from tools.trainer import data`).
"""
