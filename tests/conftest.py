import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Start JAX now, with one CPU device: train_and_evaluate would otherwise split the CPU
# (train.cpu_devices, n2v_jax/runtime.py) in whichever test happens to start JAX first.
# Tests of that behaviour run in subprocesses.
import jax  # noqa: E402

jax.devices()
