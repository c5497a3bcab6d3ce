"""Runs n2v_jax's command lines as `python -m n2v_jax.X ARGS` does, many times at the cost of
one start-up: a helper process imports the package's heavy dependencies once (JAX, Flax,
zarr, ...; JAX's backend is not started, so forking is safe) and forks a child per command.
The child runs the module as `python -m` would (`runpy.run_module(..., '__main__')`, so its
flags are defined and parsed by absl's `app.run` as usual) with its own stdout and stderr
files, working folder and exit status. What differs from a new interpreter: output printed
while those dependencies are imported goes to the helper, not to the command's stderr (the
command lines' own subprocess tests cover that)."""

import json
import os
import subprocess
import sys
import tempfile
import threading

from tests.helpers import REPO

_SERVER = r"""
import json, os, runpy, sys, traceback
import n2v_jax.bioimage.package, n2v_jax.inference, n2v_jax.training  # noqa: F401
print("ready", flush=True)
for line in sys.stdin:
  req = json.loads(line)
  pid = os.fork()
  if pid == 0:
    try:
      for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
      os.chdir(req["cwd"])
      sys.argv = [req["module"]] + req["args"]
      runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
      code = 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      if isinstance(e.code, str):
        print(e.code, file=sys.stderr)
    except BaseException:
      traceback.print_exc()
      code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  _, status = os.waitpid(pid, 0)
  print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Result:
  def __init__(self, returncode: int, stdout: str, stderr: str):
    self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class CliRunner:
  """`run(module, *args)` -> Result(returncode, stdout, stderr), like subprocess.run."""

  def __init__(self, env: dict | None = None):
    self._proc = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=REPO, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env=dict(os.environ, JAX_PLATFORMS="cpu", **(env or {})))
    assert self._proc.stdout.readline().strip() == "ready"
    self._lock = threading.Lock()
    self._tmp = tempfile.mkdtemp(prefix="n2v_jax_cli_")

  def run(self, module: str, *args: str) -> Result:
    with self._lock:  # one command at a time per helper
      out, err = os.path.join(self._tmp, "stdout"), os.path.join(self._tmp, "stderr")
      self._proc.stdin.write(json.dumps({"module": module, "args": list(args), "cwd": REPO,
                                         "stdout": out, "stderr": err}) + "\n")
      self._proc.stdin.flush()
      reply = json.loads(self._proc.stdout.readline())
      return Result(reply["rc"], open(out).read(), open(err).read())

  def close(self) -> None:
    self._proc.stdin.close()
    self._proc.wait(timeout=60)
