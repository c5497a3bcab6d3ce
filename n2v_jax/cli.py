"""What the command lines share: flag parsing with one-line errors, the one place that
prints `error: ...` and sets the exit status, and the lines a stopped run prints.

Exit statuses: 0 done; 1 an error (one `error:` line on stderr, nothing half-written);
2 some files of a folder or plate failed (the others are done); 128 + the signal after
SIGTERM/SIGINT (143, 130): what was saved is complete, and the same command continues.
"""

import contextlib
import re
import sys
from typing import Callable, Iterator

from absl import app, flags

from n2v_jax import errors
from n2v_jax.preemption import exit_status, signal_name

EXIT_ERROR = 1
EXIT_SOME_FAILED = 2


def _parse(argv: list[str]) -> list[str]:
  """absl flag parsing, with ml_collections' bare KeyError/AttributeError made readable."""
  try:
    rest = flags.FLAGS(argv)
    config = flags.FLAGS["config"] if "config" in flags.FLAGS else None
    if config is not None and config.present and hasattr(config, "config_filename"):
      flags.FLAGS.config.get("seed")  # config files load lazily: fail here, not later
    return rest
  except flags.Error as e:
    print(f"error: {errors.one_line(e)}", file=sys.stderr)
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
          f"{errors.one_line(e.__cause__ or e).split('; ')[-1]}", file=sys.stderr)
  except (ValueError, TypeError) as e:  # a config file's own check (e.g. configs/jump.py:x)
    print(f"error: {errors.one_line(e)}", file=sys.stderr)
  sys.exit(1)


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run of main, with one-line errors for bad flags and config files."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax is chatty at INFO
  # --help lists the flags of the program's main module: a console script's (n2v-train)
  # is its wrapper, so the command line's own flags are declared as its flags too.
  for module in (main.__module__, __name__):  # this module defines --config
    for flag in flags.FLAGS.get_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=_parse)


def fail(exc: BaseException) -> None:
  """The one `error:` line of a failed command, then exit status 1."""
  print(f"error: {errors.one_line(exc)}", file=sys.stderr)
  sys.exit(EXIT_ERROR)


@contextlib.contextmanager
def reporting_errors() -> Iterator[None]:
  """Library errors (and the OS's, e.g. a full disk) become one `error:` line and exit 1."""
  try:
    yield
  except (errors.N2VError, OSError) as e:
    fail(e)


def stopped(signum: int, what: str, again: str = "continue") -> None:
  """The one line a run stopped by a signal prints, then exit 128 + signal."""
  print(f"{signal_name(signum)}: {what}; run the same command again to {again} "
        f"(exit status {exit_status(signum)})", file=sys.stderr)
  sys.exit(exit_status(signum))


def config_flag() -> None:
  """--config FILE[:ARG], by default the packaged configs/default.py (so an installed
  n2v-train needs no checkout)."""
  import os
  from ml_collections import config_flags
  from n2v_jax import configs
  default = os.path.join(os.path.dirname(configs.__file__), "default.py")
  config_flags.DEFINE_config_file("config", default, "Config file, e.g. configs/default.py "
                                  "(the default), configs/n2v2.py, configs/jump.py:orig.")
