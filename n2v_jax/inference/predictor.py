"""A trained model ready to predict (`Predictor`, `load_predictor`) and the denoising of
one image in data units (`predict_image`).

Loading reads model.json (`workdir.model_meta.ModelMeta`) and restores the network's
variables alone from the newest good checkpoint: no optimizer and no train state, and
nothing from the workdir is unpickled or run. Prediction folds batch norm into the
convolutions and tiles the image (`tiling`); the SURE blend (`blend`) is optional.
"""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from n2v_jax.data import normalizer as normalizer_lib, symmetry
from n2v_jax.errors import N2VError, NotFoundError
from n2v_jax.inference import blend as blend_lib, tiling
from n2v_jax.inference.options import PredictOptions
from n2v_jax.nn import unet
from n2v_jax.workdir import checkpoint
from n2v_jax.workdir.model_meta import ModelMeta


@dataclasses.dataclass
class Predictor:
  model: Any  # nn.unet.UNet
  variables: Any  # {'params', 'batch_stats'}
  meta: ModelMeta
  divisor: int
  halo: int  # pixels of context kept around each tile core (multiple of divisor)

  @functools.cached_property
  def normalize(self) -> normalizer_lib.Normalizer:  # the training run's, from model.json
    return self.meta.normalizer

  mean = property(lambda self: self.normalize.mean)
  std = property(lambda self: self.normalize.std)
  transform = property(lambda self: self.meta.transform)
  in_channels = property(lambda self: self.meta.in_channels)
  spatial_axes = property(lambda self: self.meta.spatial_axes)
  blend = property(lambda self: self.meta.predict_blend)  # PredictOptions.blend None: this

  @functools.cached_property
  def _inference(self) -> tuple[Any, Any]:
    """(model, variables) that predict: batch norm folded into the convolutions."""
    return unet.fold_batch_norm(self.model, self.variables)

  @functools.cached_property
  def apply(self):
    model = self._inference[0]
    return jax.jit(lambda v, x: unet.apply_model(model, v, x, train=False))

  @functools.cached_property
  def n_devices(self) -> int:
    """Devices prediction spreads tiles over (one process: all of them)."""
    return jax.device_count() if jax.process_count() == 1 else 1

  @functools.cached_property
  def _shardings(self):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("tiles",))
    tiles = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tiles"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return tiles, jax.device_put(self._inference[1], replicated)

  def predict_tiles(self, tiles: np.ndarray, sharded: bool = False) -> jax.Array:
    """Model output for a batch of normalized tiles; `sharded`: split over all devices."""
    if not sharded:
      return self.apply(self._inference[1], jnp.asarray(tiles))
    tile_sharding, variables = self._shardings
    return self.apply(variables, jax.device_put(tiles, tile_sharding))


def load_predictor(workdir: str) -> Predictor:
  """The model of a trained workdir: model.json and the newest checkpoint that reads back
  whole (its network variables only)."""
  meta = ModelMeta.read(workdir)
  model_cfg = meta.model_config
  model = unet.make_model(model_cfg, meta.in_channels)
  zeros = jnp.zeros((1, *meta.patch_shape, meta.in_channels), jnp.float32)
  abstract = jax.eval_shape(lambda key: flax.core.unfreeze(model.init(key, zeros, train=False)),
                            jax.random.key(0))
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # any writer's topology
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one_device),
                          abstract)
  variables = checkpoint.restore_variables(checkpoint.manager(workdir, read_only=True), abstract)
  if variables is None:
    raise NotFoundError(f"{workdir}: no checkpoint found (train a model first)")
  divisor = unet.divisor(model_cfg.depth)
  halo = -(-unet.receptive_field_radius(model_cfg) // divisor) * divisor
  return Predictor(model, variables, meta, divisor, halo)


def predict_image(pred: Predictor, image: np.ndarray,
                  options: PredictOptions | None = None) -> np.ndarray:
  """Denoise one raw image (*spatial, C) in data units -> float32 in data units, as
  `options` say (tile, tta, batch; blend None: as the model was trained)."""
  options = options or PredictOptions()
  blend = pred.blend if options.blend is None else options.blend
  return pred.normalize.inverse(_normalized_variants(pred, image, options, blend)[-1])


def predict_variants(pred: Predictor, image: np.ndarray, options: PredictOptions | None = None,
                     blend: bool = False) -> dict[bool, np.ndarray]:
  """{False: the network's prediction} and, with blend, {True: its SURE blend} of one raw
  image, in data units: the blend reuses the prediction (one more pass, not two)."""
  outs = _normalized_variants(pred, image, options or PredictOptions(), blend)
  return {b: pred.normalize.inverse(y) for b, y in zip((False, True), outs)}


def _normalized_variants(pred: Predictor, image: np.ndarray, options: PredictOptions,
                         blend: bool) -> list[np.ndarray]:
  """[prediction] or [prediction, its blend], in normalized units."""
  x = pred.normalize.image(image)
  denoise = functools.partial(_denoise_normalized, pred, options=options)
  y = denoise(x)
  return [y, blend_lib.sure_blend(denoise, x, y)] if blend else [y]


def _denoise_normalized(pred: Predictor, x: np.ndarray, options: PredictOptions) -> np.ndarray:
  y = tiling.predict_normalized(pred, x, options)
  if y is None:  # TTA on tiles that are not square or not aligned: 8 passes over the image
    one = options.replace(tta=False)
    y = np.zeros(x.shape, np.float32)  # a running sum, not 8 outputs held at once
    for k in range(symmetry.COUNT):
      y += symmetry.invert(tiling.predict_normalized(
          pred, np.ascontiguousarray(symmetry.apply(x, k)), one), k)
    y /= symmetry.COUNT
  return y


def check_input(pred: Predictor, name: str, array: np.ndarray, spatial_axes: str,
                channel_names: list[str] | None = None) -> None:
  """The image fits the model: spatial axes, channel count, channel names when both the
  file and the model have them (a model applied to channels in another order gives a
  plausible wrong answer), finite pixels."""
  if spatial_axes != pred.spatial_axes:
    raise N2VError(f"{name}: spatial axes {spatial_axes}, but the model was trained on "
                   f"{pred.spatial_axes} data")
  if array.shape[-1] != pred.in_channels:
    names = pred.meta.channel_names
    raise N2VError(f"{name}: {array.shape[-1]} channel(s), but the model was trained on "
                   f"{pred.in_channels}" + (f" ({', '.join(names)})" if names else ""))
  trained = pred.meta.channel_names
  if channel_names and trained and list(channel_names) != list(trained):
    raise N2VError(f"{name}: channels named {', '.join(channel_names)}, but the model was "
                   f"trained on {', '.join(trained)}; give them in the model's order, or pass "
                   "--nocheck_channel_names if they are the same channels under other names")
  bad = ~np.isfinite(array)
  if bad.any():
    raise N2VError(f"{name}: {int(bad.sum())} NaN/inf pixel(s); clean them before denoising")


