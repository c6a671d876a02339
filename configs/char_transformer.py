"""Byte-level pre-LN causal Transformer LM on the Python stdlib's source.

Run:  python3 tools/train.py --config=configs/char_transformer.py --workdir=/tmp/char_tf
Reaches: <= 2.5 bits/char on held-out stdlib files (every 10th file) within
10 minutes on 2 CPU cores (measured: 2.16 bits/char after 2000 steps, 2.38
after 1000; ~6 minutes on a loaded 2-core machine).
"""

from tools.trainer import config_schema


def get_config():
  config = config_schema.with_model(config_schema.base_config(), "transformer")
  config.model_config.d_model = 128
  config.model_config.num_heads = 4
  config.model_config.num_layers = 2
  config.batch_size = 32
  config.seq_len = 64
  config.num_steps = 2000
  config.steps_per_call = 50
  config.learning_rate = 2e-3
  config.warmup_steps = 200
  config.eval_every = 500
  config.checkpoint_every = 500
  config.log_every = 100
  config.eval_batches = 8
  return config
