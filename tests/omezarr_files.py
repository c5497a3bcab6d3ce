"""OME-Zarr images and plates as ome-zarr-py (the community's writer) makes them, for tests."""

import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata
from ome_zarr_models.common.omero import Omero

NAMES = ["DNA", "RNA", "AGP"]
SCALE = {"t": 1.0, "c": 1.0, "z": 2.0, "y": 0.5, "x": 0.25}


def _fmt(version):
  return (FormatV04(), 2) if version == "0.4" else (None, 3)


def write_ome(path, data, axes, chunks, version="0.5", names=NAMES, scale_factors=(2,)):
  """An OME-Zarr image as ome-zarr-py writes it (by default with one downsampled level)."""
  fmt, zarr_format = _fmt(version)
  group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
  write_image(data, group, axes=list(axes.lower()), fmt=fmt, scale_factors=scale_factors,
              scale={a: SCALE[a] for a in axes.lower()}, storage_options={"chunks": chunks},
              **({"omero": _omero(names)} if names else {}))
  return str(path)


def write_plate(path, fields, version="0.5"):
  """fields: {'A/1/0': CYX array, ...} as an HCS plate written by ome-zarr-py."""
  fmt, zarr_format = _fmt(version)
  root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
  wells = sorted({k.rsplit("/", 1)[0] for k in fields})
  rows = sorted({w.split("/")[0] for w in wells})
  cols = sorted({w.split("/")[1] for w in wells})
  write_plate_metadata(root, rows, cols, wells, fmt=fmt, field_count=2, name="test plate")
  for w in wells:
    row, col = w.split("/")
    well = root.require_group(row).require_group(col)
    names = sorted(k.rsplit("/", 1)[1] for k in fields if k.startswith(w + "/"))
    write_well_metadata(well, names, fmt=fmt)
    for n in names:
      data = fields[f"{w}/{n}"]
      write_ome_group(well.require_group(n), data, fmt)
  return str(path)


def _omero(names):
  return Omero.model_validate({"channels": [
      {"label": n, "color": "FFFFFF", "active": True,
       "window": {"start": 0.0, "end": 2000.0, "min": 0.0, "max": 4000.0}} for n in names]})


def write_ome_group(group, data, fmt):
  names = NAMES[:data.shape[0]]
  write_image(data, group, axes=["c", "y", "x"], fmt=fmt, scale_factors=(),
              scale={"c": 1.0, "y": 0.5, "x": 0.5}, storage_options={"chunks": (1, 16, 16)},
              omero=_omero(names))
