"""Byte-level LSTM language model on the Python standard library's source.

Run:  python3 tools/train.py --config=configs/char_lstm.py --workdir=/tmp/char_lstm
Held-out: every 10th stdlib file (sorted by name); metric: bits/char.
"""

from tools.trainer import config_schema


def get_config():
  config = config_schema.with_model(config_schema.base_config(), "lstm")
  config.model_config.embed_dim = 64
  config.model_config.hidden_dim = 256
  config.batch_size = 32
  config.seq_len = 64
  config.num_steps = 3000
  config.steps_per_call = 50
  config.learning_rate = 3e-3
  config.warmup_steps = 100
  config.eval_every = 500
  config.checkpoint_every = 500
  config.log_every = 100
  config.eval_batches = 8
  return config
