"""MLP on the UCI 8x8 digits (the README's default training run).

Run:  bash tools/train.sh   (or: python3 tools/train.py --config=configs/digits_mlp.py --workdir=/tmp/digits_mlp)
Reaches: >= 97% test accuracy on the fixed 360-image test split in well
under 2 minutes on 2 CPU cores.
"""

from tools.trainer import config_schema


def get_config():
  config = config_schema.with_model(config_schema.base_config(), "mlp")
  config.model_config.hidden_sizes = (256, 256)
  config.model_config.dropout = 0.3
  config.weight_decay = 0.05
  config.batch_size = 128
  config.num_steps = 2000
  config.steps_per_call = 100
  config.learning_rate = 2e-3
  config.warmup_steps = 100
  config.eval_every = 500
  config.checkpoint_every = 500
  config.log_every = 200
  return config
