"""Where a run computes: multi-host start (jax.distributed), the data-parallel shardings
over the visible devices, and, before JAX starts, the opt-in split of the CPU into several
XLA devices (train.cpu_devices).

XLA:CPU runs one device's convolutions, and above all their weight gradients, on about one
core. Splitting the host into several XLA devices and sharding the batch over them
(ordinary data parallelism, the same step up to float rounding: tests/test_parallel.py)
lets those convolutions run side by side (experiments/benchmark/README.md has the figures).
"""

import logging
import os

import jax
import numpy as np

from n2v_jax import reporter
from n2v_jax.errors import N2VError

# At most this many CPU devices in 'auto' mode: more only add per-device overhead.
MAX_AUTO_CPU_DEVICES = 8
# The training images are replicated on every device (host memory on CPU): 'auto' uses
# fewer devices rather than more than this many bytes of copies.
MAX_REPLICATED_BYTES = 2 * 2**30


# Why this is opt-in: XLA:CPU gives n devices a pool of n threads, and each device's part
# of the all-reduce holds its thread until every part arrives; XLA has aborted runs whose
# parts did not all arrive within its time limit (experiments/benchmark/README.md).
# model.batch_chunks gets part of the speed with no collective at all and is the default.


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
    reporter.status(f"Splitting the CPU into {n} XLA devices (train.cpu_devices; 1 = off).")
  return n


def initialize_distributed(train_cfg) -> None:
  """jax.distributed.initialize() with the config's coordinator/num_processes/process_id
  where set (else JAX's cluster detection and JAX_COORDINATOR_ADDRESS)."""
  kwargs = {}
  if train_cfg.coordinator_address:
    kwargs["coordinator_address"] = train_cfg.coordinator_address
  if train_cfg.num_processes > 0:
    kwargs["num_processes"] = int(train_cfg.num_processes)
  if train_cfg.process_id >= 0:
    kwargs["process_id"] = int(train_cfg.process_id)
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**kwargs)


def shardings(train_cfg):
  """(devices, batch sharding, replicated sharding) for data parallelism; the shardings are
  None with one device or train.data_parallel off."""
  devices = jax.devices()
  if not train_cfg.data_parallel or len(devices) == 1:
    return devices[:1], None, None
  if train_cfg.batch_size % len(devices):
    raise N2VError(f"config.train.batch_size={train_cfg.batch_size} must be divisible by "
                   f"the {len(devices)} visible devices for data parallelism")
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return devices, batch, replicated
