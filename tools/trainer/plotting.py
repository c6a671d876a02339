"""Training/eval curves from metrics.jsonl as a PNG (matplotlib, Agg).

Metric names follow `<split>/<name>` (`train/loss`, `eval/loss`,
`eval/accuracy`, `train/bits_per_char`, ...; a name without a split counts
as `train`). `plot_curves` draws one panel per metric name, loss first, then
accuracy / bits per character / perplexity, each with one line per split.

>>> import os, tempfile
>>> records = [{"step": s, "train/loss": 1 / s, "eval/loss": 1.2 / s,
...             "eval/accuracy": 1 - 1 / s} for s in range(1, 20)]
>>> out = os.path.join(tempfile.mkdtemp(), "curves.png")
>>> plot_curves(records, out)
['loss', 'accuracy']
>>> open(out, "rb").read(4) == b"\\x89PNG"
True
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from tools.trainer import metrics as metrics_lib  # pylint: disable=g-import-not-at-top

__all__ = ["DEFAULT_PANELS", "curves", "plot_curves", "plot_workdir",
           "run_title"]

#: Metric names drawn by default, in panel order (those present are drawn).
DEFAULT_PANELS = ("loss", "accuracy", "bits_per_char", "perplexity")

_LABELS = {"loss": "loss", "accuracy": "accuracy",
           "bits_per_char": "bits / char", "perplexity": "perplexity"}


def _split_name(key: str) -> Tuple[str, str]:
  split, sep, name = key.partition("/")
  return (split, name) if sep else ("train", key)


def curves(records: Sequence[Mapping[str, Any]]
           ) -> Dict[str, Dict[str, Tuple[List[int], List[float]]]]:
  """Groups records into `{name: {split: (steps, values)}}`, sorted by step.

  If a step appears more than once for a key, the last record wins.

  >>> curves([{"step": 2, "train/loss": 0.5}, {"step": 1, "train/loss": 1.0}])
  {'loss': {'train': ([1, 2], [1.0, 0.5])}}
  """
  points: Dict[str, Dict[str, Dict[int, float]]] = {}
  for record in records:
    step = record.get("step")
    if not isinstance(step, int):
      continue
    for key, value in record.items():
      if key in ("step", "time") or not isinstance(value, (int, float)):
        continue
      split, name = _split_name(key)
      points.setdefault(name, {}).setdefault(split, {})[step] = float(value)
  out = {}
  for name, by_split in points.items():
    out[name] = {}
    for split, series in by_split.items():
      steps = sorted(series)
      out[name][split] = (steps, [series[s] for s in steps])
  return out


def plot_curves(records: Sequence[Mapping[str, Any]], out_path: str,
                panels: Optional[Sequence[str]] = None,
                title: Optional[str] = None) -> List[str]:
  """Writes a PNG of training/eval curves.

  Args:
    records: metric records (`metrics.read_metrics(workdir)`).
    out_path: the PNG file to write.
    panels: metric names to draw, one panel each; by default those of
      `DEFAULT_PANELS` present in `records`.
    title: figure title.

  Returns:
    The names of the panels drawn.

  Raises:
    ValueError: if none of the requested metrics is in `records`.
  """
  by_name = curves(records)
  wanted = DEFAULT_PANELS if panels is None else tuple(panels)
  drawn = [name for name in wanted if name in by_name]
  if not drawn:
    raise ValueError(
        f"No metric to plot: looked for {list(wanted)} (as '<split>/<name>' "
        f"keys) but the records hold {sorted(by_name)}. Pass panels=[...] "
        "with names that are present.")
  fig, axes = plt.subplots(1, len(drawn), figsize=(5.5 * len(drawn), 4),
                           squeeze=False)
  try:
    for ax, name in zip(axes[0], drawn):
      for split in sorted(by_name[name], key=lambda s: (s != "train", s)):
        steps, values = by_name[name][split]
        style = "-" if len(steps) > 20 else ".-"
        ax.plot(steps, values, style, label=split)
      ax.set_xlabel("step")
      ax.set_ylabel(_LABELS.get(name, name))
      ax.set_title(_LABELS.get(name, name))
      ax.grid(True, alpha=0.3)
      ax.legend()
      if name == "loss" and all(
          v > 0 for _, vals in by_name[name].values() for v in vals):
        ax.set_yscale("log")
    if title:
      fig.suptitle(title)
    fig.tight_layout()
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out_path, dpi=100)
  finally:
    plt.close(fig)
  return drawn


def run_title(workdir: str) -> str:
  """The plot title of a run: its config's name (`name` in the
  `<workdir>/config.json` the trainer writes), else "<model> on <dataset>",
  else the workdir's name.

  >>> import json, os, tempfile
  >>> workdir = tempfile.mkdtemp()
  >>> with open(os.path.join(workdir, "config.json"), "w") as f:
  ...   json.dump({"name": "digits_mlp", "model": "mlp"}, f)
  >>> run_title(workdir)
  'digits_mlp'
  """
  try:
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
  except (OSError, ValueError):
    config = {}
  if not isinstance(config, dict):
    config = {}
  if config.get("name"):
    return str(config["name"])
  if config.get("model") and config.get("dataset"):
    return f"{config['model']} on {config['dataset']}"
  return os.path.basename(os.path.abspath(workdir))


def plot_workdir(workdir: str, out_path: Optional[str] = None,
                 panels: Optional[Sequence[str]] = None) -> str:
  """Plots `<workdir>/metrics.jsonl` to `out_path` (default
  `<workdir>/curves.png`), titled `run_title(workdir)`; returns the PNG path.

  Raises:
    FileNotFoundError: if there is no metrics.jsonl in `workdir`.
    ValueError: if none of `panels` is in the records.
  """
  path = os.path.join(workdir, metrics_lib.METRICS_FILE)
  if not os.path.exists(path):
    what = ("does not exist" if not os.path.isdir(workdir)
            else f"has no {metrics_lib.METRICS_FILE}")
    raise FileNotFoundError(
        f"{path} not found: {workdir!r} {what}; is it the --workdir of a "
        "training run?")
  out_path = out_path or os.path.join(workdir, "curves.png")
  plot_curves(metrics_lib.read_metrics(path), out_path, panels=panels,
              title=run_title(workdir))
  return out_path
