"""Reusable, tested parts of the pax_haiku training binary (tools/train.py).

* `tools.trainer.train_lib`: `train_and_evaluate(config, workdir)`, the
  binary's whole run, callable from your own program;
* `tools.trainer.registry`: models and datasets by import path
  (`package.module:factory`); `models` and `datasets` hold the built-in ones;
* `tools.trainer.sources`, `tools.trainer.pipeline`: random-access example
  sources and the grain pipeline that batches them;
* `tools.trainer.tasks`: losses and metrics (classification, language model);
* `tools.trainer.data`: the download-free data sets;
* `tools.trainer.checkpoint`: orbax checkpoints with Haiku names;
* `tools.trainer.metrics`: metrics.jsonl + TensorBoard writer, console lines;
* `tools.trainer.plotting`: training/eval curves as a PNG.

Import the submodules directly (`from tools.trainer import train_lib`).
"""
