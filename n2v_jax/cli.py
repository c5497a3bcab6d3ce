"""Command-line plumbing shared by the entry points: one-line errors, quiet libraries."""

import re
import sys
from typing import Callable

from absl import app, flags


def _one_line(message: str) -> str:
  return "; ".join(l.strip() for l in str(message).replace("\\n", "\n").splitlines() if l.strip())


def _parse(argv: list[str]) -> list[str]:
  """absl flag parsing, with ml_collections' bare KeyError/AttributeError made readable."""
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
      flags.FLAGS.config.get("seed")  # config files load lazily: fail here, not later
    return rest
  except flags.Error as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
  except (KeyError, AttributeError) as e:
    bad = next((a.split("=")[0] for a in argv[1:] if a.startswith("--config.")), "--config.?")
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(e))
    hint = re.search(r'Did you mean "([^"]+)"', str(e).replace("\\", ""))
    print(f"error: unknown config field {names[0] if names else str(e)!r} in {bad}"
          + (f' (did you mean "{hint.group(1)}"?)' if hint else "")
          + "; the fields are listed in configs/default.py", file=sys.stderr)
  except SyntaxError as e:  # a config file being edited
    print(f"error: could not load the config file {e.filename}: {e.msg} (line {e.lineno})",
          file=sys.stderr)
  except OSError as e:
    print(f"error: could not load the config file {flags.FLAGS['config'].config_filename}: "
          f"{_one_line(e.__cause__ or e).split('; ')[-1]}", file=sys.stderr)
  except (ValueError, TypeError) as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
  sys.exit(1)


def run(main: Callable[[list[str]], None]) -> None:
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax is chatty at INFO
  app.run(main, flags_parser=_parse)
