"""Sections of a Markdown report that several benchmark commands write.

`tools.bench.run_all` writes BENCHMARKS.md as a whole; `tools.bench.startup`
owns one section of it (`## Startup...`). Each command replaces only what it
measured: run_all keeps the sections other commands own, and those commands
replace their own section in place (or append it).

>>> old = "# Report\\n\\n## A\\nold a\\n\\n## Startup: x\\nold s\\n"
>>> new = "## Startup: x\\nnew s\\n"
>>> print(replace_section(old, "## Startup", new), end="")
# Report
<BLANKLINE>
## A
old a
<BLANKLINE>
## Startup: x
new s
>>> print(keep_sections("# New\\n", old, ["## Startup"]), end="")
# New
<BLANKLINE>
## Startup: x
old s
"""

import os
from typing import List, Optional, Sequence, Tuple

# The section `tools.bench.startup --out` writes.
STARTUP_HEADING = "## Startup"
# Sections of BENCHMARKS.md that commands other than run_all write.
NOT_RUN_ALLS = (STARTUP_HEADING,)


def _split(text: str) -> List[Tuple[str, str]]:
  """`(first line, text)` of each part: the preamble, then every `## `
  section up to the next one (the preamble's first line may be anything)."""
  parts: List[Tuple[str, str]] = []
  lines = text.splitlines(keepends=True)
  start = 0
  for i, line in enumerate(lines):
    if line.startswith("## ") and i > start:
      parts.append((lines[start].rstrip("\n"), "".join(lines[start:i])))
      start = i
  if start < len(lines):
    parts.append((lines[start].rstrip("\n"), "".join(lines[start:])))
  return parts


def find_section(text: str, heading: str) -> Optional[str]:
  """The section whose heading line starts with `heading`, or None."""
  for first, part in _split(text):
    if first.startswith(heading) and first.startswith("## "):
      return part
  return None


def _join(parts: Sequence[str]) -> str:
  """Parts separated by one blank line, ending in one newline."""
  return "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"


def replace_section(text: str, heading: str, section: str) -> str:
  """`text` with the section starting with `heading` replaced by `section`
  (appended if there is none)."""
  parts = _split(text)
  out, replaced = [], False
  for first, part in parts:
    if first.startswith("## ") and first.startswith(heading):
      if not replaced:
        out.append(section)
      replaced = True
    else:
      out.append(part)
  if not replaced:
    out.append(section)
  return _join(out)


def keep_sections(new_text: str, old_text: str,
                  headings: Sequence[str]) -> str:
  """`new_text`, then the sections of `old_text` that start with one of
  `headings` (sections another command writes), when `new_text` lacks them."""
  kept = [find_section(old_text, h) for h in headings
          if find_section(new_text, h) is None]
  return _join([new_text, *[k for k in kept if k]])


def read(path: str) -> str:
  """The file's text, or "" if it does not exist yet."""
  if not os.path.exists(path):
    return ""
  with open(path, encoding="utf-8") as f:
    return f.read()
