import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the whole session, this process and the command
# lines the tests start: most tests train the same tiny networks, so their steps compile
# once instead of once per test (XLA:CPU compiles take seconds each). Programs loaded from
# the cache are the ones compiled, so no result changes.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix="n2v_jax_test_cache_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# Start JAX now, with one CPU device: train_and_evaluate would otherwise split the CPU
# (train.cpu_devices, n2v_jax/training/runtime.py) in whichever test happens to start JAX first.
# Tests of that behaviour run in subprocesses.
import jax  # noqa: E402

jax.devices()
