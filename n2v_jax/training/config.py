"""The config of a run, checked before any work starts, and what may change on resume.

Every check raises one N2VError naming the field and what was expected; the choice lists
are `n2v_jax.choices`'s, the ones the code itself uses.
"""

from typing import Any

import ml_collections

from n2v_jax import choices
from n2v_jax.data import sampling
from n2v_jax.errors import N2VError
from n2v_jax.workdir import model_meta, saved_config

# Fields that may change when an existing workdir is resumed.
RESUMABLE_CHANGES = ("train.num_steps", "train.log_every", "train.checkpoint_every",
                     "train.eval_every", "train.progress", "train.keep_checkpoints",
                     "train.tensorboard",  # logging only
                     "predict.tile", "predict.tta", "predict.blend", "data.stream_cache_files",
                     # float rounding only (data parallelism, convolutions on batch slices)
                     "train.cpu_devices", "model.batch_chunks", "model.conv_algorithm",
                     "model.conv_precision",
                     # where the processes of a multi-host run live may change between jobs
                     "train.coordinator_address", "train.num_processes", "train.process_id")

_CHOICES = {
    "algorithm": choices.ALGORITHMS,
    "mask.strategy": choices.STRATEGIES,
    "mask.channel_mode": choices.CHANNEL_MODES,
    "opt.schedule": choices.SCHEDULES,
    "loss": choices.LOSSES,
    "data.normalization": choices.NORMALIZATIONS,
    "data.transform": choices.TRANSFORMS,
    "model.dtype": choices.MODEL_DTYPES,
    "model.upsampling": choices.UPSAMPLINGS,
    "model.conv_algorithm": choices.CONV_ALGORITHMS,
    "model.conv_precision": choices.CONV_PRECISIONS,
}


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Fills in fields added since the config was written (complete), then checks it."""
  saved_config.complete(config)
  for field, allowed in _CHOICES.items():
    value = _get(config, field)
    if value not in allowed:
      raise N2VError(f"config.{field}={value!r}: expected one of {', '.join(allowed)}")
  positive = ("train.num_steps", "train.batch_size", "train.log_every", "train.eval_every",
              "train.checkpoint_every", "train.keep_checkpoints", "model.depth",
              "model.features", "model.kernel_size")
  for field in positive:
    value = _get(config, field)
    if not isinstance(value, int) or value <= 0:
      raise N2VError(f"config.{field}={value!r}: expected a positive integer")
  if config.model.kernel_size % 2 == 0:
    raise N2VError(f"config.model.kernel_size={config.model.kernel_size}: must be odd")
  if not 0 < config.mask.perc_pix <= 100:
    raise N2VError(f"config.mask.perc_pix={config.mask.perc_pix}: expected a percentage in "
                   "(0, 100]")
  if config.mask.radius < 1:
    raise N2VError(f"config.mask.radius={config.mask.radius}: expected >= 1")
  if not 0 <= config.data.val_fraction < 1:
    raise N2VError(f"config.data.val_fraction={config.data.val_fraction}: expected in [0, 1)")
  if config.train.eval_every % config.train.log_every:
    raise N2VError(f"config.train.eval_every={config.train.eval_every} must be a multiple of "
                   f"train.log_every={config.train.log_every}")
  cpu_devices = config.train.cpu_devices
  if not isinstance(cpu_devices, int) or cpu_devices < 0:
    raise N2VError(f"config.train.cpu_devices={cpu_devices!r}: expected 0 (auto), 1 (off) "
                   "or a device count")
  if cpu_devices > 1 and config.train.batch_size % cpu_devices:
    raise N2VError(f"config.train.batch_size={config.train.batch_size} must be divisible by "
                   f"train.cpu_devices={cpu_devices}")
  sampling.check_patches_per_image(config.data.stream_patches_per_image,
                                   config.train.batch_size)
  paired = config.algorithm in choices.PAIRED_ALGORITHMS
  if paired and config.data.path and not config.data.target_path:
    raise N2VError(f"config.algorithm={config.algorithm!r} trains on pairs: set "
                   "data.target_path to the targets aligned with data.path ("
                   + ("a second noisy acquisition" if config.algorithm == "n2n" else
                      "the clean images") + ")")
  if not paired and config.data.target_path:
    raise N2VError(f"config.data.target_path={config.data.target_path!r} is used only by "
                   "config.algorithm='n2n' or 'care' (n2v needs no targets)")
  if (not paired and config.model.residual
      and config.mask.strategy in choices.CENTRE_FREE_DETERMINISTIC):
    raise N2VError(
        f"config.mask.strategy={config.mask.strategy!r} with config.model.residual=True: the "
        "replacement is a fixed function of the neighbours, so the network learns to output "
        "(signal - replacement) without reading the centre, and at prediction the residual "
        "adds the raw noisy pixel back (BSD68: 18.8 dB, below the noisy input's 20.2; "
        "experiments/architecture). Use residual=False, or a random replacement "
        "(uniform_withCP, uniform_withoutCP)")
  if config.opt.learning_rate <= 0:
    raise N2VError(f"config.opt.learning_rate={config.opt.learning_rate}: expected > 0")


def incompatible_changes(saved: dict, current: dict) -> list[str]:
  """Fields (dotted) that differ between a saved run's config and the current one."""
  a, b = saved_config.flat(saved), saved_config.flat(current)
  for key, value in saved_config.ADDED_FIELDS.items():
    a.setdefault(key, value)
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES
                and not k.startswith("runtime."))


def check_resume(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that holds a run with another config (or an unreadable model)."""
  if not saved_config.exists(workdir):
    return
  model_meta.check_format(workdir)
  changed = incompatible_changes(saved_config.read_raw(workdir), saved_config.to_dict(config))
  if changed:
    raise N2VError(f"{workdir} holds a run with a different config ({', '.join(changed)}); "
                   "use a new --workdir to start a new run")
