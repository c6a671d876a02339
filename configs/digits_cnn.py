"""Small CNN (two 3x3 convs, max-pool, MLP head) on the UCI 8x8 digits.

Run:  python3 tools/train.py --config=configs/digits_cnn.py --workdir=/tmp/digits_cnn
Reaches: >= 98% test accuracy on the fixed 360-image test split in under
2 minutes on 2 CPU cores.
"""

from tools.trainer import config_schema


def get_config():
  config = config_schema.with_model(config_schema.base_config(), "cnn")
  config.model_config.channels = (16, 32)
  config.model_config.hidden = 128
  config.model_config.dropout = 0.3
  config.weight_decay = 0.05
  config.batch_size = 128
  config.num_steps = 1000
  config.steps_per_call = 10
  config.scan_unroll = 10  # See config_schema: convs are slow inside loops.
  config.learning_rate = 2e-3
  config.warmup_steps = 100
  config.eval_every = 500
  config.checkpoint_every = 500
  config.log_every = 100
  return config
