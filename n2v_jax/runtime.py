"""Process-wide JAX setup that must happen before JAX starts: CPU virtual devices.

Opt-in (train.cpu_devices). XLA:CPU runs one device's convolutions, and above all their
weight gradients, on about 1.3 of this machine's 2 cores. Splitting the host into several
XLA devices and sharding the batch over them (ordinary data parallelism, the same step up
to float rounding: tests/test_parallel.py) lets those convolutions run side by side: the
batch-16 U-Net step ran 1.6-1.9x faster with 8 CPU devices than with 1 on the 2-core
machine (experiments/benchmark/README.md).
"""

import logging
import os
import sys

import jax

# At most this many CPU devices in 'auto' mode: 8 was the fastest on 2 cores (16 was not
# faster); more devices only add per-device overhead.
MAX_AUTO_CPU_DEVICES = 8
# The training images are replicated on every device (host memory on CPU): 'auto' uses
# fewer devices rather than more than this many bytes of copies.
MAX_REPLICATED_BYTES = 2 * 2**30


# Why this is opt-in: XLA:CPU gives n devices a pool of n threads, and each device's part
# of the all-reduce holds its thread until every part arrives. Twice, at the first step of
# a BSD68 run (experiments/bsd68/run.py), XLA aborted the job after its 40 s limit with 5
# of 8 parts arrived; blocking on the inputs first and switching off Eigen's own threading
# did not prevent the second. Five shorter runs did not show it. model.batch_chunks gets
# part of the speed with no collective at all and is the default instead.


def auto_cpu_devices(batch_size: int, replicated_bytes: int) -> int:
  """The largest device count <= MAX_AUTO_CPU_DEVICES dividing the batch within the budget."""
  for n in range(MAX_AUTO_CPU_DEVICES, 0, -1):
    if batch_size % n == 0 and (n == 1 or n * replicated_bytes <= MAX_REPLICATED_BYTES):
      return n
  return 1


def _forced_by_user() -> bool:
  return "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")


def _cpu_is_default() -> bool:
  platforms = os.environ.get("JAX_PLATFORMS", "") or jax.config.jax_platforms or ""
  if platforms:
    return platforms.split(",")[0].strip() == "cpu"
  # No platform asked for: JAX takes an accelerator when its plugin is installed.
  import importlib.util
  return not any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin",
                                                        "jax_rocm60_plugin", "libtpu"))


def setup_cpu_devices(requested: int, batch_size: int, replicated_bytes: int) -> int | None:
  """Splits the CPU into XLA devices for data parallelism, if JAX has not started yet.

  requested: config.train.cpu_devices (0 = auto, 1 = off, n = exactly n).
  Returns the device count set, or None when left as it was (an accelerator is the default
  device, the user set --xla_force_host_platform_device_count, or JAX already started, as in
  a notebook that ran JAX code before: restart it to change the count).
  """
  if requested == 1 or _forced_by_user() or not _cpu_is_default():
    return None
  n = requested or auto_cpu_devices(batch_size, replicated_bytes)
  from jax._src import xla_bridge  # the only public alternative is to try and catch
  if xla_bridge.backends_are_initialized():
    if jax.device_count() != n:
      logging.info("train.cpu_devices: JAX already started with %d device(s); keeping them",
                   jax.device_count())
    return None
  if n > 1:
    jax.config.update("jax_num_cpu_devices", n)
    print(f"Splitting the CPU into {n} XLA devices (train.cpu_devices; 1 = off).",
          file=sys.stderr)
  return n
