"""docs/configuration.md, made from configs/default.py: every field, its default and the
comment that default.py gives it, so the reference cannot drift from the code.

    python -m n2v_jax.configs.reference > docs/configuration.md

(tests/test_docs.py fails when the committed file differs from what this prints.)
"""

import io
import os
import re
import tokenize

from n2v_jax.configs import default

_FIELD = re.compile(r"^\s*config\.([\w.]+)\s*=")

HEADER = """# Configuration reference

Every field of `configs/default.py` (that file is the source of this page:
`python -m n2v_jax.configs.reference > docs/configuration.md` remakes it). Override any
field on the command line with `--config.group.field=value`; a tuple field takes
`--config.data.patch_shape='(16, 64, 64)'` (a single number means that size on every axis).
Only the fields in `n2v_jax/training/config.py:RESUMABLE_CHANGES` may change when a workdir
is resumed.
"""


def _value(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _cell(text: str) -> str:
  return text.replace("|", "\\|").strip()


def markdown() -> str:
  """The reference page."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.py")
  source = open(path).read()
  comments = {}  # line -> comment text (whole-line and inline)
  whole_line = set()
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.COMMENT:
      comments[tok.start[0]] = tok.string.lstrip("#").strip()
      if not tok.line[:tok.start[1]].strip():
        whole_line.add(tok.start[0])
  config = default.get_config()
  out, pending, table_open = [HEADER, "## Top level", ""], [], False
  for number, line in enumerate(source.splitlines(), start=1):
    if number in whole_line:
      pending.append(comments[number])
      continue
    match = _FIELD.match(line)
    if not match:
      if not line.strip():
        pending = []
      continue
    dotted = match.group(1)
    text = " ".join(pending + ([comments[number]] if number in comments else []))
    pending = []
    value = _value(config, dotted)
    if hasattr(value, "keys"):  # a group
      out += ["", f"## `{dotted}`", "", text, ""] if text else ["", f"## `{dotted}`", ""]
      table_open = False
      continue
    if not table_open:
      out += ["| field | default | what it does |", "|---|---|---|"]
      table_open = True
    out.append(f"| `{dotted}` | `{_cell(repr(value))}` | {_cell(text)} |")
  return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


if __name__ == "__main__":
  print(markdown(), end="")
