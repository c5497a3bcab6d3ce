"""n2v_jax: Noise2Void self-supervised denoising in JAX/Flax.

The package in layers, lowest first (each imports only those before it; tests/test_layers.py
checks it):

  errors, reporter, choices, preemption  the error type, messages, choice lists, signals
  configs/    the configs (default.py: every field)
  io/         files, no JAX: TIFF, OME-Zarr, axes, channel fields, atomic outputs, locks
  data/       pixels to patches: sources, normalizer, dataset, sampling, prefetch
  nn/         the network, pure JAX: U-Net, convolutions, masking, losses
  workdir/    a run on disk: config.json, model.json (ModelMeta), checkpoints (orbax)
  inference/  prediction: predictor, tiling, blend, folder/plate/OME-Zarr jobs, evaluation
  training/   steps, loop, session, trainer, K models in one program, sweeps
  bioimage/   bioimage.io packages: ONNX weights, rdf.yaml, README, test tensors
  train, predict, evaluate, export, sweep   the command lines (flags only); cli: shared

Python API: `training.train_and_evaluate`, `inference.load_predictor`,
`inference.predict_image`, `inference.predict_path`, `inference.PredictOptions`,
`bioimage.export_bioimageio`.
"""

__version__ = "0.2.0"
