"""The package's README.md: what goes in and out, how the model was trained and checked,
how to run it, what to cite."""

import numpy as np

from n2v_jax.bioimage import rdf
from n2v_jax.inference import predictor


def readme(pred: predictor.Predictor, name: str, config: dict, summary: dict | None,
           check: dict) -> str:
  """The package's README.md: what goes in and out, how it was trained and checked, how to
  run it, what to cite."""
  meta, nd = pred.meta, len(pred.spatial_axes)
  step, min_size, halo = rdf.size_constraints(pred)
  axes = "batch, channel, " + ", ".join(meta.spatial_axes.lower())
  if pred.transform == "none":
    units = (f"Raw intensities in the training data's units. The package's preprocessing "
             f"normalizes each channel with the training statistics ({meta.normalization}: "
             f"offset {np.round(pred.mean, 6).tolist()}, scale {np.round(pred.std, 6).tolist()}) "
             "and its postprocessing maps the result back.")
  else:
    units = ("Raw photon counts (>= 0; negative values count as 0). The model was trained "
             "after the Anscombe transform 2*sqrt(x + 3/8); that transform, the per-channel "
             "normalization and their inverses are inside the ONNX graph, so the package has "
             "no normalization step of its own.")
  train = config.get("train", {})
  data = config.get("data", {})
  psnr = (f"On the training data's ground truth: PSNR {summary['psnr_noisy']:.2f} dB (noisy) -> "
          f"{summary['psnr_denoised']:.2f} dB (denoised)." if summary and "psnr_denoised" in summary
          else "No ground truth was given in training, so no PSNR was measured; compare "
               "before/after on your own data.")
  cites = "\n".join(f"- {c['text']} https://doi.org/{c['doi']}" for c in rdf.citations(meta))
  return f"""# {name}

{rdf.method_name(meta)} denoising of {nd}D images with {meta.in_channels} channel(s)
({', '.join(meta.channel_labels())}), trained with n2v_jax (Noise2Void in JAX/Flax) and
exported to ONNX.

## Input and output

- Axes: {axes} (float32; other types are cast).
- Size: every spatial axis a multiple of {step}, at least {min_size}. The network sees
  {halo} pixels around each output pixel: when tiling, overlap tiles by {halo} pixels on
  each side and keep their centres (the `halo` of the output axes).
- Intensities: {units}
- Output: the denoised image, same shape, in the input's units.

## Training

{meta.algorithm} on {data.get('path') or 'the built-in synthetic image'}:
{train.get('num_steps')} steps of {train.get('batch_size')} patches of {list(meta.patch_shape)};
U-Net depth {meta.model['depth']}, {meta.model['features']} features,
{'N2V2 (MaxBlurPool, no top skip)' if meta.n2v2 else 'N2V'} architecture. The full
configuration is attached as `config.json`; `model.json` holds what prediction needs.
This package holds the network alone: n2v_jax's optional SURE blend with the noisy input
(`predict --blend`) is not part of it.

## Validation

{psnr}
The ONNX weights reproduce n2v_jax's own prediction of the test input (`test_input.npy` ->
`test_output.npy`) to {check['relative']:.1e} of the output's range (max |difference|
{check['max_abs']:.3g}, ONNX Runtime on CPU).

## How to run it

- Fiji with deepImageJ: install deepImageJ, then "Install model" from this zip (local file),
  open an image and run the model from the deepImageJ Run dialog.
- napari: the bioimage.io plugin (napari-bioimageio / bioimageio.core) loads the zip and
  predicts the open layer.
- Python: `bioimageio.core` (`bioimageio predict` or `load_model_description` + `predict`).

## Citation

If you use this model, cite:

{cites}
"""
