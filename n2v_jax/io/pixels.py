"""The one input check: which pixel data n2v_jax accepts, and whether it fits in memory,
decided from a file's header before any pixel is read (no JAX here).

Every reader calls it (TIFF, .npy, zarr / OME-Zarr), so training, prediction, evaluation
and export's test input refuse the same files with the same words. Accepted: unsigned and
signed integers and floats (float16 to float64). Refused: complex values (an FFT or a phase
image: dropping the imaginary part would give a plausible wrong answer), booleans (a mask,
not intensities), and strings, objects, dates. A whole-image read is refused when the
pixels and their float32 copy (what every use of them makes) exceed the memory available
now: on a machine that overcommits memory the attempt would be an OOM kill, not an error.
"""

import math
import os

import numpy as np

from n2v_jax.errors import N2VError

SUPPORTED = "integers or floats"
# What reads a large image in pieces instead of whole.
ALTERNATIVES = ("train on it with --config.data.streaming=True; denoise it block by block "
                "as OME-Zarr (convert it, e.g. with bioformats2raw); or crop it")


class TooLargeError(N2VError, MemoryError):
  """An image whose whole read would not fit in the memory available."""


def check_dtype(path: str, dtype) -> None:
  dtype = np.dtype(dtype)
  if dtype.kind in "uif":
    return
  if dtype.kind == "c":
    raise N2VError(f"{path}: complex pixels ({dtype}) are not supported: n2v_jax denoises real "
                   f"intensities ({SUPPORTED}); save the magnitude, or the real and imaginary "
                   "parts as two channels")
  if dtype.kind == "b":
    raise N2VError(f"{path}: boolean pixels (a mask?) are not supported: n2v_jax denoises "
                   f"intensities ({SUPPORTED}); save them as uint8 if they are an image")
  raise N2VError(f"{path}: {dtype} data is not an image; expected {SUPPORTED}")


def available_memory() -> int:
  """Bytes this process can still allocate: the kernel's MemAvailable, or less where a
  cgroup (a container, a batch job) sets a lower limit."""
  limits = []
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          limits.append(int(line.split()[1]) * 1024)
  except OSError:
    pass
  try:
    with open("/sys/fs/cgroup/memory.max") as f_max, \
        open("/sys/fs/cgroup/memory.current") as f_cur:
      text = f_max.read().strip()
      if text != "max":
        limits.append(int(text) - int(f_cur.read()))
  except (OSError, ValueError):
    pass
  if not limits:
    try:
      limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
      return 1 << 62
  return max(0, min(limits))


def size_text(nbytes: float) -> str:
  for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
    if nbytes < 1024 or unit == "TiB":
      return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
    nbytes /= 1024
  raise AssertionError


def check_memory(path: str, need: int, what: str) -> None:
  """Refuses to go on when `need` bytes (for `what`) exceed the memory available now."""
  available = available_memory()
  if need > available:
    raise TooLargeError(f"{path}: too large for memory: {what} needs {size_text(need)}, "
                        f"{size_text(available)} are available; {ALTERNATIVES}")


def check_fits(path: str, shape: tuple[int, ...], dtype) -> None:
  """Refuses a whole read of `shape` x `dtype` pixels that would not fit in memory."""
  voxels = math.prod(int(n) for n in shape)
  check_memory(path, voxels * (np.dtype(dtype).itemsize + 4),
               f"reading {'x'.join(str(int(n)) for n in shape)} {np.dtype(dtype)} pixels whole")


def check(path: str, shape: tuple[int, ...], dtype, whole: bool) -> None:
  """The input check: a supported dtype, and for a whole read (`whole`) a size that fits."""
  check_dtype(path, dtype)
  if whole:
    check_fits(path, shape, dtype)
