"""The package's weights: the trained U-Net as an ONNX graph (bioimage.io has no JAX
weights format).

Built op by op with `onnx.helper` from the batch-norm-folded parameters
(`nn.unet.fold_batch_norm`), not traced: jax2onnx 0.13.0, the last release that installs
beside orbax-checkpoint 0.12.8, fails on jax 0.12 with symbolic shapes (so no dynamic
image sizes), and later releases need orbax-checkpoint < 0.11.37. The U-Net needs only
Conv, Relu, MaxPool, Resize, Concat (Split for independent channels) and Add, each of
which ONNX defines exactly as nn/unet.py computes it:

- 'SAME' convolution of an odd kernel: pads k // 2 on each side; grouped convs (independent
  channels) are contiguous groups in both.
- max-pool 2 stride 2: MaxPool; N2V2's MaxBlurPool: MaxPool window 2 stride 1, then a
  depthwise [1, 2, 1] / 4 blur (outer product over the axes) with zero padding 1, stride 2.
- nearest x2: Resize 'nearest', 'asymmetric' coordinates, 'floor' (a repeat);
  bilinear x2 with half-pixel centres and edge clamping: Resize 'linear', 'half_pixel'.

The layout is ONNX's channels-first (batch, channel, [z,] y, x); batch and spatial sizes are
symbolic, so any batch and any multiple of 2**depth runs. Computed in float32.

`border`: n2v_jax predicts an image reflect-padded by the receptive-field halo and crops
the result (inference.tiling), so border pixels see mirrored content, not the
network's zero padding; the graph does the same (Pad 'reflect', then Slice), so that it
reproduces n2v_jax's prediction up to the border.
"""

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from n2v_jax.data.normalizer import Normalizer
from n2v_jax.nn import unet

OPSET = 17  # Resize, Split with sizes as input; read by ONNX Runtime >= 1.11
IR_VERSION = 8  # the IR of opset 17, so older runtimes (deepImageJ's) load the file too
INPUT, OUTPUT = "input", "output"


class _Graph:
  """Nodes and constants of one graph, with fresh names."""

  def __init__(self):
    self.nodes, self.constants, self._count = [], [], 0

  def _name(self, prefix: str) -> str:
    self._count += 1
    return f"{prefix}_{self._count}"

  def constant(self, array: np.ndarray, prefix: str = "c") -> str:
    name = self._name(prefix)
    self.constants.append(numpy_helper.from_array(np.asarray(array), name))
    return name

  def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> Any:
    outputs = [self._name(op_type.lower()) for _ in range(n_out)]
    self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))
    return outputs[0] if n_out == 1 else outputs


def _conv(g: _Graph, x: str, conv_params: dict, groups: int, name: str) -> str:
  kernel = np.asarray(conv_params["kernel"], np.float32)  # flax: (*k, C_in/groups, C_out)
  nd = kernel.ndim - 2
  weight = np.transpose(kernel, (nd + 1, nd, *range(nd)))  # onnx: (C_out, C_in/groups, *k)
  pad = kernel.shape[0] // 2
  return g.op("Conv", [x, g.constant(weight, f"{name}_w"),
                       g.constant(np.asarray(conv_params["bias"], np.float32), f"{name}_b")],
              kernel_shape=list(kernel.shape[:nd]), pads=[pad] * (2 * nd), group=groups)


def _block(g: _Graph, x: str, params: dict, groups: int, name: str) -> str:
  for i in range(2):
    x = g.op("Relu", [_conv(g, x, params[f"{name}_conv{i}"], groups, f"{name}_conv{i}")])
  return x


def _max_blur_pool(g: _Graph, x: str, channels: int, nd: int) -> str:
  x = g.op("MaxPool", [x], kernel_shape=[2] * nd, strides=[1] * nd)
  taps = np.array([1.0, 2.0, 1.0], np.float32) / 4
  blur = taps
  for _ in range(nd - 1):
    blur = np.multiply.outer(blur, taps)
  weight = np.broadcast_to(blur, (channels, 1, *blur.shape)).astype(np.float32)
  return g.op("Conv", [x, g.constant(weight, "blur")], kernel_shape=[3] * nd,
              pads=[1] * (2 * nd), strides=[2] * nd, group=channels)


def _upsample(g: _Graph, x: str, nd: int, mode: str) -> str:
  scales = g.constant(np.array([1.0, 1.0] + [2.0] * nd, np.float32), "scales")
  if mode == "bilinear":
    return g.op("Resize", [x, "", scales], mode="linear",
                coordinate_transformation_mode="half_pixel")
  return g.op("Resize", [x, "", scales], mode="nearest",
              coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _concat_groups(g: _Graph, a: str, a_features: int, b: str, b_features: int,
                   groups: int) -> str:
  """unet._concat_groups: group i of the result is group i of a, then of b."""
  if groups == 1:
    return g.op("Concat", [a, b], axis=1)
  split_a = g.constant(np.full(groups, a_features // groups, np.int64), "split")
  split_b = g.constant(np.full(groups, b_features // groups, np.int64), "split")
  parts_a = g.op("Split", [a, split_a], n_out=groups, axis=1)
  parts_b = g.op("Split", [b, split_b], n_out=groups, axis=1)
  return g.op("Concat", [t for pair in zip(parts_a, parts_b) for t in pair], axis=1)


def _per_channel(values: np.ndarray, nd: int) -> np.ndarray:
  return np.asarray(values, np.float32).reshape(1, -1, *([1] * nd))


def _normalize_in(g: _Graph, x: str, normalizer: Normalizer, nd: int) -> str:
  """Normalizer.image in the graph: the transform, then (x - mean) / std."""
  if normalizer.transform == "anscombe":
    x = g.op("Max", [x, g.constant(np.float32(0.0))])
    x = g.op("Sqrt", [g.op("Add", [x, g.constant(np.float32(0.375))])])
    x = g.op("Mul", [x, g.constant(np.float32(2.0))])
  x = g.op("Sub", [x, g.constant(_per_channel(normalizer.mean, nd), "mean")])
  return g.op("Div", [x, g.constant(_per_channel(normalizer.std, nd), "std")])


def _normalize_out(g: _Graph, y: str, normalizer: Normalizer, nd: int) -> str:
  """Normalizer.inverse in the graph."""
  y = g.op("Mul", [y, g.constant(_per_channel(normalizer.std, nd), "std")])
  y = g.op("Add", [y, g.constant(_per_channel(normalizer.mean, nd), "mean")])
  if normalizer.transform == "anscombe":
    y = g.op("Mul", [g.op("Max", [y, g.constant(np.float32(0.0))]), g.constant(np.float32(0.5))])
    y = g.op("Sub", [g.op("Mul", [y, y]), g.constant(np.float32(0.375))])
  return y


def _pad_reflect(g: _Graph, x: str, border: int, nd: int) -> str:
  pads = np.array(([0, 0] + [border] * nd) * 2, np.int64)
  return g.op("Pad", [x, g.constant(pads, "pads")], mode="reflect")


def _crop(g: _Graph, x: str, border: int, nd: int) -> str:
  axes = np.arange(2, 2 + nd, dtype=np.int64)
  return g.op("Slice", [x, g.constant(np.full(nd, border, np.int64), "starts"),
                        g.constant(np.full(nd, -border, np.int64), "ends"),
                        g.constant(axes, "axes")])


def unet_to_onnx(model: unet.UNet, variables: Any, in_channels: int, ndim: int,
                 normalizer: Normalizer | None = None,
                 border: int = 0) -> onnx.ModelProto:
  """The U-Net (batch norm folded here if present) on (batch, C, [z,] y, x) float32.

  normalizer: also map data units in and out (the transform and mean/std, as
  `inference.predictor.predict_image` does); None: the graph works in normalized units, like the
  network itself. border: reflect-pad every spatial axis by this much before the network
  and crop it after (a multiple of 2**depth; inputs must be larger than it)."""
  model, variables = unet.fold_batch_norm(model, variables)
  params = variables["params"]
  nd, groups = int(ndim), in_channels if model.independent_channels else 1
  g = _Graph()
  x_in = INPUT if normalizer is None else _normalize_in(g, INPUT, normalizer, nd)
  if border:
    x_in = _pad_reflect(g, x_in, border, nd)
  h, skips = x_in, []
  half = lambda level: model.features * 2 ** max(level - 1, 0)
  for level in range(model.depth):
    h = _block(g, h, params, groups, f"enc{level}")
    skips.append((h, model.features * 2**level * groups))
    h = (_max_blur_pool(g, h, model.features * 2**level * groups, nd) if model.n2v2
         else g.op("MaxPool", [h], kernel_shape=[2] * nd, strides=[2] * nd))
  h = _block(g, h, params, groups, "bottom")
  h_features = half(model.depth) * groups
  for level in reversed(range(model.depth)):
    h = _upsample(g, h, nd, model.upsampling)
    if not (model.n2v2 and level == 0):  # N2V2 drops the top-level skip only
      skip, skip_features = skips[level]
      h = _concat_groups(g, skip, skip_features, h, h_features, groups)
    h = _block(g, h, params, groups, f"dec{level}")
    h_features = half(level) * groups
  out = _conv(g, h, params["final"], groups, "final")
  if model.residual:
    out = g.op("Add", [out, x_in])
  if border:
    out = _crop(g, out, border, nd)
  if normalizer is not None:
    out = _normalize_out(g, out, normalizer, nd)
  g.nodes[-1].output[0] = OUTPUT

  spatial = ["z", "y", "x"][-nd:]
  value_info = lambda name: helper.make_tensor_value_info(
      name, onnx.TensorProto.FLOAT, ["batch", in_channels, *spatial])
  graph = helper.make_graph(g.nodes, "n2v_jax_unet", [value_info(INPUT)],
                            [value_info(OUTPUT)], initializer=g.constants)
  onnx_model = helper.make_model(graph, producer_name="n2v_jax",
                                 opset_imports=[helper.make_opsetid("", OPSET)])
  onnx_model.ir_version = IR_VERSION
  onnx.checker.check_model(onnx_model, full_check=True)
  return onnx_model


def onnx_model(pred: Any) -> onnx.ModelProto:
  """A predictor's network (inference.predictor.Predictor) as ONNX: in normalized units,
  or in data units for an Anscombe model (whose intensity mapping is in the graph)."""
  return unet_to_onnx(pred.model, pred.variables, pred.in_channels, len(pred.spatial_axes),
                      None if pred.transform == "none" else pred.normalize, border=pred.halo)
