"""Grouping single-channel files into multi-channel fields by a filename pattern (no JAX).

Plate readers write one file per channel, e.g. the Opera Phenix / JUMP naming
`r01c01f01p01-ch2sk1fk1fl1.tiff` (row, column, field, plane, channel). A pattern is a
regular expression with a named group `channel`; files whose names match are grouped
into fields by the rest of the name (the channel part replaced by `*`), so
`r01c01f01p01-ch*sk1fk1fl1.tiff` is one field with channels 2, 3, 5.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from n2v_jax import reporter
from n2v_jax.errors import N2VError
from n2v_jax.io import tiff

# Named patterns; any other string is used as a regular expression.
PATTERNS = {
    "phenix": r"^r\d+c\d+f\d+p\d+-ch(?P<channel>\d+)sk\d+fk\d+fl\d+\.tiff?$",
}


@dataclasses.dataclass
class Field:
  key: str  # the file name with the channel replaced by '*'
  paths: list[str]  # one per channel, in `channels` order
  channels: list[str]  # channel ids as in the file names, e.g. ['5', '3', '2']


def compile_pattern(pattern: str) -> re.Pattern:
  source = PATTERNS.get(pattern, pattern)
  try:
    regex = re.compile(source, re.IGNORECASE)
  except re.error as exc:
    raise N2VError(f"channel pattern {pattern!r}: not a valid regular expression ({exc})") from None
  if "channel" not in regex.groupindex:
    raise N2VError(f"channel pattern {pattern!r}: needs a named group (?P<channel>...) "
                   f"or one of {', '.join(PATTERNS)}")
  return regex


def _channel_key(channel: str):
  return (0, int(channel), "") if channel.isdigit() else (1, 0, channel)


def _normalize_channels(channels) -> list[str] | None:
  if channels is None or (not isinstance(channels, str) and len(channels) == 0) or channels == "":
    return None
  if isinstance(channels, str):
    channels = [c for c in channels.replace(" ", "").split(",") if c]
  out = [str(c).lstrip("0") or "0" if str(c).isdigit() else str(c) for c in channels]
  if len(set(out)) != len(out):
    raise N2VError(f"channels {list(channels)}: a channel is listed twice")
  return out


def group_fields(paths: list[str], pattern: str, channels=None, strict: bool = True,
                 ) -> tuple[list[Field], list[str], list[tuple[str, str]]]:
  """Group files into fields.

  channels: ordered channel ids to use (others are ignored), e.g. '5,3,2' or ['5','3','2'];
    None/empty: every channel found, in numeric order.
  Returns (fields sorted by key, names that do not match the pattern,
  [(field key, reason)] for incomplete fields). strict: raise on the first incomplete
  field or when nothing matches, instead of returning it.
  """
  regex = compile_pattern(pattern)
  wanted = _normalize_channels(channels)
  groups: dict[str, dict[str, str]] = {}
  unmatched = []
  for p in paths:
    name = os.path.basename(p)
    m = regex.match(name)
    if m is None:
      unmatched.append(p)
      continue
    raw = m.group("channel")
    ch = raw.lstrip("0") or "0" if raw.isdigit() else raw
    key = name[:m.start("channel")] + "*" + name[m.end("channel"):]
    chans = groups.setdefault(key, {})
    if ch in chans:
      raise N2VError(f"{p}: channel {ch} of field {key} appears twice ({chans[ch]})")
    chans[ch] = p
  if not groups:
    if strict:
      raise N2VError(f"no file name matches the channel pattern {pattern!r} "
                     f"(e.g. {os.path.basename(paths[0]) if paths else 'no files'})")
    return [], unmatched, []
  if wanted is None:
    wanted = sorted({c for chans in groups.values() for c in chans}, key=_channel_key)
  fields, incomplete = [], []
  for key in sorted(groups):
    chans = groups[key]
    missing = [c for c in wanted if c not in chans]
    if missing:
      found = ", ".join(sorted(chans, key=_channel_key))
      reason = (f"field {key}: channel(s) {', '.join(missing)} missing (found {found}; "
                f"expected {', '.join(wanted)})")
      if strict:
        raise N2VError(reason)
      incomplete.append((key, reason))
      continue
    fields.append(Field(key, [chans[c] for c in wanted], list(wanted)))
  return fields, unmatched, incomplete


def grouping(data_cfg) -> dict | None:
  """data.channel_pattern, channels, channel_names -> the `group` of sources.open_paths."""
  if not data_cfg.channel_pattern:
    return None
  return {"pattern": data_cfg.channel_pattern, "channels": tuple(data_cfg.channels or ()),
          "channel_names": tuple(data_cfg.channel_names or ())}


def training_fields(paths: list[str], group: dict) -> tuple[list[Field], list[str] | None]:
  """The fields for training (every one complete; an incomplete one is an error), and the
  channel names. group: {'pattern', 'channels', 'channel_names'} from the data config."""
  found, unmatched, _ = group_fields(paths, group["pattern"], group["channels"])
  if unmatched:
    reporter.warning(f"{len(unmatched)} file(s) do not match data.channel_pattern and are "
                     f"ignored, e.g. {unmatched[0]}")
  names = list(group["channel_names"]) or None
  if names is not None and len(names) != len(found[0].channels):
    raise N2VError(f"data.channel_names has {len(names)} names for {len(found[0].channels)} "
                   f"channels ({', '.join(found[0].channels)})")
  return found, names or [f"ch{c}" for c in found[0].channels]


def field_name(field: Field) -> str:
  """The field's key beside its files, e.g. 'DIR/r01c01f01p01-ch*sk1fk1fl1.tiff'."""
  return os.path.join(os.path.dirname(field.paths[0]), field.key)


def without_channel(path: str, axes: str, shape: tuple) -> tuple[str, tuple]:
  """A single-channel file's axes and shape with its size-1 C axis dropped (else an error)."""
  if "C" not in axes:
    return axes, tuple(shape)
  c = axes.index("C")
  if shape[c] != 1:
    raise N2VError(f"{path}: has {shape[c]} channels; a channel pattern groups "
                   "single-channel files")
  return axes.replace("C", ""), tuple(shape[:c]) + tuple(shape[c + 1:])


def read_field(field: Field, axes: str | None = None) -> tuple[np.ndarray, str, list]:
  """The field as one array with a leading C axis, its axes (e.g. 'CYX'), and the
  per-channel tiff.Images (for metadata)."""
  images = [tiff.read_image(p, axes) for p in field.paths]
  first = images[0]
  for img in images[1:]:
    if img.axes != first.axes or img.data.shape != first.data.shape:
      raise N2VError(f"{img.path}: shape {img.data.shape} ({img.axes}) differs from "
                     f"{first.path} {first.data.shape} ({first.axes}) in field {field.key}")
    if img.data.dtype != first.data.dtype:
      raise N2VError(f"{img.path}: dtype {img.data.dtype} differs from {first.path} "
                     f"({first.data.dtype}) in field {field.key}")
  rest, shape = without_channel(first.path, first.axes, first.data.shape)
  return np.stack([img.data.reshape(shape) for img in images]), "C" + rest, images
