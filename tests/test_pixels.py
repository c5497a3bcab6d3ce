"""The one input check (n2v_jax.io.pixels): which dtypes are accepted, and the size check
made from the header before any whole read."""

import numpy as np
import pytest

from n2v_jax.errors import N2VError
from n2v_jax.io import pixels, tiff
from tests.helpers import noisy_stack, write_tiff


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32,
                                   np.int64, np.float16, np.float32, np.float64])
def test_integers_and_floats_are_accepted(dtype):
  pixels.check("x.tif", (4, 4), dtype, whole=True)


@pytest.mark.parametrize("dtype, words", [
    (np.complex64, "complex pixels (complex64)"), (np.complex128, "complex pixels"),
    (np.bool_, "boolean pixels"), ("<U3", "<U3 data is not an image"),
    (object, "object data is not an image"), ("datetime64[s]", "data is not an image"),
])
def test_other_dtypes_are_refused_naming_the_file(dtype, words):
  with pytest.raises(N2VError, match="^x.tif: ") as e:
    pixels.check("x.tif", (4, 4), dtype, whole=False)
  assert words in str(e.value) and "integers or floats" in str(e.value)


def test_whole_reads_are_sized_against_available_memory(monkeypatch):
  assert 0 < pixels.available_memory() < 1 << 62
  monkeypatch.setattr(pixels, "available_memory", lambda: 10_000)
  pixels.check("x.tif", (30, 40), np.uint16, whole=True)  # 1,200 px x (2 + 4) bytes
  pixels.check("x.tif", (1000, 1000), np.uint16, whole=False)  # a lazy open reads nothing
  with pytest.raises(pixels.TooLargeError, match=r"^x.tif: too large for memory: reading "
                     r"1000x1000 uint16 pixels whole needs 5.7 MiB, 9.8 KiB are available; "
                     r"train on it with --config.data.streaming=True"):
    pixels.check("x.tif", (1000, 1000), np.uint16, whole=True)


def test_read_image_checks_before_reading(tmp_path, monkeypatch):
  path = write_tiff(tmp_path / "a.tif", noisy_stack(0, (64, 64)), "YX")
  monkeypatch.setattr(pixels, "available_memory", lambda: 1000)
  lazy = tiff.read_image(path, lazy=True)  # a memory map: nothing read, nothing refused
  assert lazy.data.shape == (64, 64)
  with pytest.raises(pixels.TooLargeError, match="a.tif: too large for memory"):
    tiff.read_image(path)
