import glob
import hashlib
import os

import numpy as np
import pytest
import tifffile

from n2v_jax.io import tiff
from n2v_jax.io.axes import from_canonical, to_canonical, validate_axes
from n2v_jax.io.tiff import list_images, read_image, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.environ.get("N2V_DATA", os.path.join(REPO, "..", "shared", "data"))
JUMP = os.path.join(DATA_ROOT, "microscopy", "jump_cpg0000_BR00117006_A01_s1")
# sha256 of the C-order uint16 pixels, from the data set's README
JUMP_SHA256 = "6ec067842fce8a507f73c791e30b3399dba9777796716aa4f88dc59503194fcc"
needs_jump = pytest.mark.skipif(
    not os.path.isdir(JUMP), reason=f"JUMP data folder not found at {JUMP} (set N2V_DATA)"
)

ALL_AXES = ["YX", "SYX", "CYX", "SCYX", "ZYX", "SZYX", "CZYX", "SCZYX", "TCYX", "TZCYX", "YXC"]
SIZES = {"S": 2, "T": 3, "C": 4, "Z": 5, "Y": 6, "X": 7}


def _data(axes, dtype=np.float32, sizes=SIZES, seed=0):
  shape = tuple(sizes[a] for a in axes)
  values = np.random.default_rng(seed).uniform(0, 200, shape)
  return values.astype(dtype)


def _leftovers(folder):
  return [n for n in os.listdir(folder) if n.startswith(".") or n.endswith(".tmp")]


# --------------------------------------------------------------------------- axes


def test_validate_axes():
  assert validate_axes("cyx") == "CYX"
  assert validate_axes("QYX") == "SYX"
  assert validate_axes("IZYX", 4) == "SZYX"
  with pytest.raises(ValueError, match="unknown axis letter 'W'"):
    validate_axes("WYX")
  with pytest.raises(ValueError, match="'C' appears more than once"):
    validate_axes("CCYX")
  with pytest.raises(ValueError, match="'S' appears more than once"):
    validate_axes("SQYX")
  with pytest.raises(ValueError, match="both Y and X"):
    validate_axes("ZY")
  with pytest.raises(ValueError, match="3 letters but the data has 4 dimensions"):
    validate_axes("CYX", 4)
  with pytest.raises(ValueError):
    validate_axes("")


@pytest.mark.parametrize("axes", ALL_AXES + ["STCZYX", "XY", "QCYX"])
def test_canonical_round_trip(axes):
  data = _data(validate_axes(axes), dtype=np.uint16)
  canon, spatial = to_canonical(data, axes)
  assert canon.dtype == np.uint16
  assert spatial == ("ZYX" if "Z" in axes else "YX")
  norm = validate_axes(axes)
  n_s = int(np.prod([SIZES[a] for a in norm if a in "ST"]))
  expected = (n_s, *(SIZES[a] for a in spatial), SIZES["C"] if "C" in norm else 1)
  assert canon.shape == expected
  back = from_canonical(canon, axes, data.shape)
  assert back.shape == data.shape
  np.testing.assert_array_equal(back, data)


def test_canonical_element_positions():
  data = _data("TZCYX")
  canon, _ = to_canonical(data, "TZCYX")
  # T becomes the sample axis, C moves last
  assert canon[2, 4, 5, 6, 3] == data[2, 4, 3, 5, 6]
  s_t = _data("STCYX")
  canon, _ = to_canonical(s_t, "STCYX")
  # S and T flatten in their order: sample index = s * T + t
  assert canon[1 * 3 + 2, 5, 6, 1] == s_t[1, 2, 1, 5, 6]
  yx = _data("XY")
  canon, _ = to_canonical(yx, "XY")
  assert canon[0, 3, 5, 0] == yx[5, 3]


def test_from_canonical_rejects_wrong_shape():
  with pytest.raises(ValueError, match="does not fit axes 'CYX'"):
    from_canonical(np.zeros((1, 6, 7, 3)), "CYX", (4, 6, 7))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "axes,sizes,dtype,imagej",
    [
        ("YX", SIZES, np.float32, True),
        ("CYX", dict(SIZES, C=3), np.float32, True),
        ("CYX", dict(SIZES, C=4), np.float32, True),
        ("CYX", dict(SIZES, C=3), np.uint8, True),
        ("SCYX", SIZES, np.float32, True),
        ("ZYX", SIZES, np.uint16, True),
        ("CZYX", SIZES, np.float32, False),  # ImageJ order is ZC, not CZ
        ("TZCYX", SIZES, np.float32, True),
        ("SYX", SIZES, np.int16, True),
        ("SCYX", dict(SIZES, S=1), np.float32, True),  # size-1 axes survive
        ("CYX", dict(SIZES, C=1), np.float32, True),
        ("YXC", dict(SIZES, C=3), np.float32, False),  # not ImageJ order
        ("ZCYX", SIZES, np.float64, False),  # ImageJ can't hold float64
        ("STCYX", SIZES, np.float32, False),  # two sample axes
        ("CXY", SIZES, np.uint16, False),
    ],
)
def test_write_read_round_trip(tmp_path, axes, sizes, dtype, imagej):
  data = _data(axes, dtype, sizes)
  names = [f"ch{i}" for i in range(sizes["C"])] if "C" in axes else None
  path = tmp_path / "out.tif"
  write_image(path, data, axes, channel_names=names)
  image = read_image(path)
  assert image.axes == axes
  assert image.data.dtype == data.dtype
  np.testing.assert_array_equal(image.data, data)
  assert image.channel_names == names
  assert image.path == str(path)
  with tifffile.TiffFile(path) as tif:
    assert tif.is_imagej == imagej
    # 3 or 4 float planes must never turn into an RGB image
    assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
  assert _leftovers(tmp_path) == []


def test_channel_names_and_metadata_come_from_like(tmp_path):
  src = tmp_path / "src.tif"
  raw = _data("ZCYX", np.uint16)
  tifffile.imwrite(
      src,
      raw,
      imagej=True,
      photometric="minisblack",
      resolution=(1 / 0.5, 1 / 0.5),
      metadata={
          "axes": "ZCYX",
          "unit": "um",
          "spacing": 2.0,
          "mode": "composite",
          "Info": "provenance",
          "Labels": ["a", "b", "c", "d"] * SIZES["Z"],
          "Ranges": (0.0, 1.0) * 4,
      },
  )
  like = read_image(src)
  assert like.axes == "ZCYX"
  assert like.channel_names == ["a", "b", "c", "d"]
  pred = _data("ZCYX", np.float32, seed=1) - 50
  out = tmp_path / "pred.tif"
  write_image(out, pred, like.axes, like=like)
  back = read_image(out)
  assert back.axes == "ZCYX" and back.channel_names == ["a", "b", "c", "d"]
  np.testing.assert_array_equal(back.data, pred)
  meta = back.imagej_metadata
  assert meta["unit"] == "um" and meta["spacing"] == 2.0
  assert meta["mode"] == "composite" and meta["Info"] == "provenance"
  assert back.resolution == pytest.approx((2.0, 2.0))
  # display ranges follow the new values, not the source's (0, 1)
  ranges = np.asarray(meta["Ranges"]).reshape(4, 2)
  np.testing.assert_allclose(ranges[:, 0], pred.min(axis=(0, 2, 3)))
  np.testing.assert_allclose(ranges[:, 1], pred.max(axis=(0, 2, 3)))
  # names are dropped when the channel count no longer fits
  write_image(tmp_path / "one.tif", pred[:, :1], "ZCYX", like=like)
  assert read_image(tmp_path / "one.tif").channel_names is None


def test_resolution_unit_is_carried_for_non_imagej(tmp_path):
  src = tmp_path / "src.tif"
  tifffile.imwrite(src, _data("YX", np.uint16), resolution=(1550.3, 1550.3), resolutionunit=3)
  like = read_image(src)
  assert like.axes == "YX" and like.resolution_unit == 3
  write_image(tmp_path / "out.tif", _data("YX", np.float64), "YX", like=like)
  back = read_image(tmp_path / "out.tif")
  assert back.resolution == pytest.approx((1550.3, 1550.3), rel=1e-6)
  assert back.resolution_unit == 3


# --------------------------------------------------------------------------- reading foreign files


def test_reads_plain_rgb_and_ome_files(tmp_path):
  plain = _data("YX", np.uint16)
  tifffile.imwrite(tmp_path / "plain.tif", plain, metadata=None)
  image = read_image(tmp_path / "plain.tif")
  assert image.axes == "YX" and image.imagej_metadata is None
  np.testing.assert_array_equal(image.data, plain)

  rgb = _data("YXC", np.uint8, dict(SIZES, C=3))
  tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
  assert read_image(tmp_path / "rgb.tif").axes == "YXC"

  ome = _data("ZCYX", np.uint16, dict(SIZES, C=3))
  tifffile.imwrite(
      tmp_path / "x.ome.tif",
      ome,
      ome=True,
      photometric="minisblack",
      metadata={"axes": "ZCYX", "Channel": {"Name": ["p", "q", "r"]}},
  )
  image = read_image(tmp_path / "x.ome.tif")
  assert image.axes == "ZCYX" and image.channel_names == ["p", "q", "r"]
  assert image.ome_metadata and "<OME" in image.ome_metadata
  np.testing.assert_array_equal(image.data, ome)


def test_3d_without_axes_metadata_needs_axes(tmp_path):
  stack = _data("SYX", np.uint16)
  for name, kwargs in [("pages.tif", {"metadata": None}), ("shaped.tif", {})]:
    path = tmp_path / name
    tifffile.imwrite(path, stack, photometric="minisblack", **kwargs)
    with pytest.raises(ValueError, match="ambiguous; pass --axes"):
      read_image(path)
    for axes in ("SYX", "ZYX", "CYX", "qyx"):
      image = read_image(path, axes=axes)
      assert image.axes == validate_axes(axes)
      np.testing.assert_array_equal(image.data, stack)
    with pytest.raises(ValueError, match=r"axes 'SCYX' given, but the image has 3 dim.*\(2, 6, 7\)"):
      read_image(path, axes="SCYX")


def test_given_axes_must_fit_the_files_axes(tmp_path):
  path = tmp_path / "zcyx.tif"
  tifffile.imwrite(
      path, np.zeros((2, 3, 64, 64), np.uint16), imagej=True, metadata={"axes": "ZCYX"}
  )
  with pytest.raises(ValueError) as err:
    read_image(path, axes="CYX")
  assert str(err.value) == (
      f"{path}: axes 'CYX' given, but the file has 4 dimensions "
      "(shape (2, 3, 64, 64), axes 'ZCYX' in its metadata)"
  )
  # same number of dimensions: the caller may relabel (e.g. Z as independent samples)
  assert read_image(path, axes="SCYX").axes == "SCYX"
  with pytest.raises(ValueError, match="unknown axis letter"):
    read_image(path, axes="WCYX")


def test_missing_and_corrupt_files(tmp_path):
  missing = tmp_path / "nope.tif"
  with pytest.raises(FileNotFoundError) as err:
    read_image(missing)
  assert str(err.value) == f"{missing}: no such file"
  corrupt = tmp_path / "x.tif"
  corrupt.write_bytes(np.random.default_rng(0).bytes(1000))
  with pytest.raises(ValueError, match=r"x\.tif: not a readable TIFF file \(.+\)"):
    read_image(corrupt)
  empty = tmp_path / "empty.tif"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match="not a readable TIFF file"):
    read_image(empty)
  truncated = tmp_path / "truncated.tif"
  write_image(truncated, _data("ZYX", sizes=dict(SIZES, Y=64, X=64)), "ZYX")
  truncated.write_bytes(truncated.read_bytes()[:5000])
  with pytest.raises(ValueError, match="not a readable TIFF file"):
    read_image(truncated)
  with pytest.raises(ValueError, match="is a folder"):
    read_image(tmp_path)


# --------------------------------------------------------------------------- writing safely


def test_existing_output_is_kept_without_overwrite(tmp_path):
  path = tmp_path / "out.tif"
  path.write_bytes(b"precious")
  with pytest.raises(FileExistsError) as err:
    write_image(path, _data("YX"), "YX")
  assert str(err.value) == f"{path} exists; pass --overwrite to replace it"
  assert path.read_bytes() == b"precious"
  assert _leftovers(tmp_path) == []
  write_image(path, _data("YX"), "YX", overwrite=True)
  np.testing.assert_array_equal(read_image(path).data, _data("YX"))
  assert _leftovers(tmp_path) == []
  # permissions follow the umask like a normal file, not mkstemp's private 0600
  umask = os.umask(0o022)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
  def broken_imwrite(fh, data, **kwargs):
    fh.write(b"II*\x00partial")
    raise RuntimeError("disk full")

  monkeypatch.setattr(tiff.tifffile, "imwrite", broken_imwrite)
  path = tmp_path / "out.tif"
  with pytest.raises(RuntimeError, match="disk full"):
    write_image(path, _data("YX"), "YX")
  assert os.listdir(tmp_path) == []
  path.write_bytes(b"old")
  with pytest.raises(RuntimeError, match="disk full"):
    write_image(path, _data("YX"), "YX", overwrite=True)
  assert path.read_bytes() == b"old"
  assert os.listdir(tmp_path) == ["out.tif"]


def test_write_errors(tmp_path):
  with pytest.raises(ValueError, match="3 letters but the data has 2"):
    write_image(tmp_path / "a.tif", _data("YX"), "CYX")
  with pytest.raises(FileNotFoundError, match="no such folder"):
    write_image(tmp_path / "sub" / "a.tif", _data("YX"), "YX")
  with pytest.raises(ValueError, match="2 channel names given for 4 channels"):
    write_image(tmp_path / "a.tif", _data("CYX"), "CYX", channel_names=["a", "b"])
  assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- listing


def test_list_images(tmp_path):
  for name in ["b.tif", "A.TIFF", "c.Tif", ".hidden.tif", ".b.tif.123.tmp", "notes.txt", "d.png"]:
    (tmp_path / name).write_bytes(b"x")
  (tmp_path / "folder.tif").mkdir()
  assert list_images(tmp_path) == [str(tmp_path / n) for n in ["A.TIFF", "b.tif", "c.Tif"]]
  assert list_images(tmp_path / "b.tif") == [str(tmp_path / "b.tif")]
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError) as err:
    list_images(empty)
  assert str(err.value) == f"{empty}: no .tif/.tiff files"
  with pytest.raises(FileNotFoundError):
    list_images(tmp_path / "missing")


# --------------------------------------------------------------------------- real data


@needs_jump
def test_jump_hyperstack_and_raw_files():
  hyper = read_image(os.path.join(JUMP, "jump_BR00117006_A01_s1_CYX.tif"))
  assert hyper.axes == "CYX"
  assert hyper.data.shape == (3, 1080, 1080) and hyper.data.dtype == np.uint16
  assert hyper.channel_names == ["DNA", "RNA", "AGP"]
  assert hyper.imagej_metadata["unit"] == "um"
  assert hyper.resolution == pytest.approx((1 / 0.598, 1 / 0.598), rel=1e-3)
  sha = hashlib.sha256(np.ascontiguousarray(hyper.data).tobytes()).hexdigest()
  assert sha == JUMP_SHA256
  raw_files = sorted(glob.glob(os.path.join(JUMP, "orig", "*.tiff")))
  assert len(raw_files) == 3
  by_channel = {}
  for path in raw_files:  # single-page LZW uint16, no axes metadata
    raw = read_image(path)
    assert raw.axes == "YX" and raw.data.shape == (1080, 1080)
    assert raw.data.dtype == np.uint16
    by_channel[path.split("-ch")[1][0]] = raw.data
  # the hyperstack is DNA=ch5, RNA=ch3, AGP=ch2 without any change of values
  for c, ch in enumerate("532"):
    np.testing.assert_array_equal(hyper.data[c], by_channel[ch])
  assert list_images(os.path.join(JUMP, "orig")) == raw_files
