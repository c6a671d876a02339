"""A seconds-long run for tests: tiny MLP on digits, checkpoints every 20 steps.

Run:  python3 tools/train.py --config=configs/smoke.py --workdir=/tmp/smoke
"""

from tools.trainer import config_schema


def get_config():
  config = config_schema.with_model(config_schema.base_config(), "mlp")
  config.model_config.hidden_sizes = (32,)
  config.batch_size = 32
  config.num_steps = 100
  config.steps_per_call = 10
  config.warmup_steps = 5
  config.learning_rate = 1e-2
  config.eval_every = 50
  config.checkpoint_every = 20
  config.log_every = 10
  config.plot = False
  return config
