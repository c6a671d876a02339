"""Prints docs/bad_inputs.md from the cases in tests/bad_inputs_test.py.

  python3 tests/reliability_bad_inputs_doc.py > docs/bad_inputs.md

The test module defines the cases; `bad_inputs_test.DocTest` fails when the
table does not list exactly their ids.
"""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

HEADER = """# Bad inputs and the errors they get

Generated from `tests/bad_inputs_test.py` by
`python3 tests/reliability_bad_inputs_doc.py > docs/bad_inputs.md`; the test
checks that this table lists exactly the cases it runs. Every case asserts the
error type and two regexes on the message: one for the problem, one for the
fix. A user's bad input is a `ValueError`/`TypeError` (or a subclass) with such
a message, never a bare `assert`, and for the binary never a Python traceback.

"""


def _cell(text):
  return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text):
  return f"`` {_cell(text)} ``"


def _load_cases():
  spec = importlib.util.spec_from_file_location(
      "bad_inputs_test", os.path.join(ROOT, "tests", "bad_inputs_test.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def render(module):
  lines = [HEADER.rstrip("\n"), "",
           f"{len(module.API_CASES)} API/trainer cases, "
           f"{len(module.BINARY_CASES)} command-line cases and "
           f"{len(module.RECOVERY_CASES)} damaged-checkpoint cases.", "",
           "## API and trainer (in process)", "",
           "| id | where | bad input | error | message must match (problem; "
           "fix) |", "|---|---|---|---|---|"]
  for c in module.API_CASES:
    lines.append(f"| `{c.id}` | {_code(c.area)} | {_cell(c.bad_input)} | "
                 f"`{c.error.__name__}` | {_code(c.problem)}; "
                 f"{_code(c.fix)} |")
  lines += ["", "## The training binary (`python3 tools/train.py "
            "--config=configs/smoke.py ...`)", "",
            "Exit status is non-zero, no traceback is printed, and no "
            "checkpoint is written.", "",
            "| id | where | bad input | error | message must match (problem; "
            "fix) |", "|---|---|---|---|---|"]
  for c in module.BINARY_CASES:
    lines.append(f"| `{c.id}` | {_code(c.area)} | {_cell(c.bad_input)} | "
                 f"exit status != 0 | {_code(c.problem)}; {_code(c.fix)} |")
  lines += ["", "## Damaged checkpoints (detected, skipped, never loaded)", "",
            "The newest of two checkpoints is damaged: `checkpoint.verify` "
            "raises `CheckpointError`, `restore_latest` logs \"Skipping "
            "damaged checkpoint\" and returns the previous one (arrays and "
            "metadata), and the damaged one is kept on disk.", "",
            "| id | damage |", "|---|---|"]
  for c in module.RECOVERY_CASES:
    lines.append(f"| `{c.id}` | {_cell(c.bad_input)} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.stdout.write(render(_load_cases()))
