"""Config validation: clear messages before any work starts."""

import json
from typing import Any

import ml_collections

# Fields that may change when an existing workdir is resumed.
RESUMABLE_CHANGES = ("train.num_steps", "train.log_every", "train.checkpoint_every",
                     "train.eval_every", "train.progress", "train.keep_checkpoints",
                     "train.tensorboard",  # logging only
                     "predict.tile", "predict.tta", "predict.blend", "data.stream_cache_files",
                     # float rounding only (data parallelism, convolutions on batch slices)
                     "train.cpu_devices", "model.batch_chunks",
                     # where the processes of a multi-host run live may change between jobs
                     "train.coordinator_address", "train.num_processes", "train.process_id")

_CHOICES = {
    "algorithm": ("n2v", "n2n", "care"),
    "mask.strategy": ("uniform_withCP", "uniform_withoutCP", "normal_withoutCP",
                      "normal_additive", "normal_fitted", "identity", "mean", "median"),
    "mask.channel_mode": ("independent", "shared"),
    "opt.schedule": ("constant", "cosine", "plateau"),
    "loss": ("mse", "mae"),
    "data.normalization": ("meanstd", "percentile"),
    "data.transform": ("none", "anscombe"),
    "model.dtype": ("float32", "bfloat16"),
    "model.upsampling": ("nearest", "bilinear"),
}


# Replacements computed from the neighbours alone (the centre excluded, no randomness):
# with a residual output they let the noisy centre pixel through (see validate).
CENTRE_FREE_DETERMINISTIC = ("mean", "median")


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def complete(config: ml_collections.ConfigDict) -> None:
  """Adds, in place, the ADDED_FIELDS a config written before them lacks: the one place
  where their defaults for old configs are applied."""
  for dotted, value in ADDED_FIELDS.items():
    *groups, name = dotted.split(".")
    group = config
    for g in groups:
      group = group.get(g) if group is not None else None
    if group is not None and name not in group:
      with group.unlocked():
        group[name] = value


def with_added_fields(config_dict: dict) -> dict:
  """A saved config.json with the ADDED_FIELDS it lacks filled in (a copy)."""
  config = ml_collections.ConfigDict(json.loads(json.dumps(config_dict)))
  complete(config)
  return to_dict(config)


def validate(config: ml_collections.ConfigDict) -> None:
  """Fills in fields added since the config was written (complete), then checks it."""
  complete(config)
  for field, choices in _CHOICES.items():
    value = _get(config, field)
    if value not in choices:
      raise ValueError(f"config.{field}={value!r}: expected one of {', '.join(choices)}")
  positive = ("train.num_steps", "train.batch_size", "train.log_every", "train.eval_every",
              "train.checkpoint_every", "train.keep_checkpoints", "model.depth",
              "model.features", "model.kernel_size")
  for field in positive:
    value = _get(config, field)
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"config.{field}={value!r}: expected a positive integer")
  if config.model.kernel_size % 2 == 0:
    raise ValueError(f"config.model.kernel_size={config.model.kernel_size}: must be odd")
  if not 0 < config.mask.perc_pix <= 100:
    raise ValueError(f"config.mask.perc_pix={config.mask.perc_pix}: expected a percentage in (0, 100]")
  if config.mask.radius < 1:
    raise ValueError(f"config.mask.radius={config.mask.radius}: expected >= 1")
  if not 0 <= config.data.val_fraction < 1:
    raise ValueError(f"config.data.val_fraction={config.data.val_fraction}: expected in [0, 1)")
  if config.train.eval_every % config.train.log_every:
    raise ValueError(f"config.train.eval_every={config.train.eval_every} must be a multiple of "
                     f"train.log_every={config.train.log_every}")
  cpu_devices = config.train.cpu_devices
  if not isinstance(cpu_devices, int) or cpu_devices < 0:
    raise ValueError(f"config.train.cpu_devices={cpu_devices!r}: expected 0 (auto), 1 (off) "
                     "or a device count")
  if cpu_devices > 1 and config.train.batch_size % cpu_devices:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by "
                     f"train.cpu_devices={cpu_devices}")
  per_image = config.data.stream_patches_per_image
  if not isinstance(per_image, int) or not 1 <= per_image <= config.train.batch_size:
    raise ValueError(f"config.data.stream_patches_per_image={per_image!r}: expected an integer "
                     f"from 1 to train.batch_size ({config.train.batch_size})")
  if config.algorithm != "n2v" and config.data.path and not config.data.target_path:
    raise ValueError(f"config.algorithm={config.algorithm!r} trains on pairs: set "
                     "data.target_path to the targets aligned with data.path ("
                     + ("a second noisy acquisition" if config.algorithm == "n2n" else
                        "the clean images") + ")")
  if config.algorithm == "n2v" and config.data.target_path:
    raise ValueError(f"config.data.target_path={config.data.target_path!r} is used only by "
                     "config.algorithm='n2n' or 'care' (n2v needs no targets)")
  if (config.algorithm == "n2v" and config.model.residual
      and config.mask.strategy in CENTRE_FREE_DETERMINISTIC):
    raise ValueError(
        f"config.mask.strategy={config.mask.strategy!r} with config.model.residual=True: the "
        "replacement is a fixed function of the neighbours, so the network learns to output "
        "(signal - replacement) without reading the centre, and at prediction the residual "
        "adds the raw noisy pixel back (BSD68: 18.8 dB, below the noisy input's 20.2; "
        "experiments/architecture). Use residual=False, or a random replacement "
        "(uniform_withCP, uniform_withoutCP)")
  if config.opt.learning_rate <= 0:
    raise ValueError(f"config.opt.learning_rate={config.opt.learning_rate}: expected > 0")


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """JSON-safe plain dict (tuples become lists)."""
  return json.loads(config.to_json())


def flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flat(v, key + "."))
    else:
      out[key] = v
  return out


# Fields added after workdirs were first written, with the value that reproduces what
# those older runs did: a workdir without them resumes under a current config.
ADDED_FIELDS = {"algorithm": "n2v", "data.target_path": "", "data.streaming": False, "data.stream_cache_files": 8, "data.transform": "none",
                "data.stream_patches_per_image": 1, "data.channel_pattern": "",
                "data.channels": [], "data.channel_names": [],
                "data.synthetic.correlation": 0.0,
                "model.upsampling": "nearest", "model.batch_chunks": 0, "train.cpu_devices": 1,
                "train.tensorboard": False, "predict.blend": False}


def incompatible_changes(saved: dict, current: dict) -> list[str]:
  """Fields (dotted) that differ between a saved run's config and the current one."""
  a, b = flat(saved), flat(current)
  for key, value in ADDED_FIELDS.items():
    a.setdefault(key, value)
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES
                and not k.startswith("runtime."))
