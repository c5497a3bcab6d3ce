"""Default main job: N2V on a built-in synthetic image with known clean ground truth.

    python -m n2v_jax.train --config configs/default.py --workdir runs/default

No download needed. Makes a 256x256 noisy image (Gaussian noise, sigma 0.2 on a
0..1 scale), trains a small U-Net for 300 steps (1-2 minutes on 2 CPU cores, compilation
included), denoises the image and writes `summary.json` (`psnr_noisy` 13.98 dB,
`psnr_denoised` ~28.5 dB, the last digits by CPU) and `before_after.png`.

This file is the reference of every config field: the comment above (or beside) each
field says what it does; docs/configuration.md is made from it
(`python -m n2v_jax.configs.reference`). Override any field with --config.group.field=value.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # The one seed: synthetic data, validation split, initialization, patches, masks. Same
  # seed, same run.
  config.seed = 0
  # 'n2v' (self-supervised: blind spots in the noisy images), or the supervised ceilings on
  # pairs from data.target_path: 'n2n' (target: a second noisy acquisition of the same
  # scene) and 'care' (target: the clean image); same U-Net, data pipeline and patches.
  config.algorithm = "n2v"

  # Training data. An empty path means the built-in synthetic image.
  config.data = ml_collections.ConfigDict()
  # A TIFF, a folder of TIFFs, a .npy array (plain arrays only, never unpickled; needs
  # data.axes), an OME-Zarr image or HCS plate, or a zarr array (needs data.axes). Empty:
  # the built-in synthetic image.
  config.data.path = ""
  # Axes of the files, e.g. 'YX', 'SYX', 'CYX', 'SCYX', 'ZYX', 'TZCYX' (S, T: independent
  # samples; C: channels; Z makes it 3D). Empty: from the file's metadata (2D files: 'YX').
  config.data.axes = ""
  # Optional clean ground truth of data.path (same shape); the run then ends with PSNR in
  # summary.json.
  config.data.clean_path = ""
  # n2n/care: the training targets, aligned sample by sample with data.path.
  config.data.target_path = ""
  # Training patch size, (Y, X) or (Z, Y, X), multiples of 2**model.depth; one number means
  # that size on every axis. Larger patches see more context and cost more per step.
  config.data.patch_shape = (64, 64)
  # Images held out for the validation loss (one image: its last rows); 0 disables it.
  config.data.val_fraction = 0.1
  # Explicit validation TIFF(s) instead of val_fraction.
  config.data.val_path = ""
  # Validation patches (fixed, with fixed masks, so the curve is comparable).
  config.data.max_val_patches = 64
  # Random 90-degree rotations and flips of square patches: 8x more data; makes TTA
  # meaningful.
  config.data.augment = True
  # Per-channel (x - mean) / std from the training data ('meanstd'), or 'percentile'
  # (data.percentiles: robust to saturated pixels and offsets). Stored with the model.
  config.data.normalization = "meanstd"
  config.data.percentiles = (1.0, 99.0)  # the low and high percentile of 'percentile'
  # 'anscombe': train on 2*sqrt(x + 3/8) and map predictions back, for photon counts whose
  # noise grows with intensity, so dim regions weigh as much as bright ones in the loss
  # (counts >= 0; negative values are clipped). 'none' keeps data units. Stored with the
  # model.
  config.data.transform = "none"
  # Group single-channel files into multi-channel fields by file name: 'phenix'
  # (r01c01f01p01-ch2sk1fk1fl1.tiff) or a regex with (?P<channel>...); '' = off. Prediction
  # on a folder uses it too.
  config.data.channel_pattern = ""
  # Channel ids to use, in model order, e.g. (5, 3, 2); () = every channel found, in order.
  config.data.channels = ()
  # Names for those channels, e.g. ('DNA', 'RNA', 'AGP'), stored in model.json.
  config.data.channel_names = ()
  # Data larger than memory: files memory-mapped (or decoded on demand), patches read on the
  # host per (seed, step), normalization from a 4M-voxel sample. Other patches than in
  # memory, the same results on resume.
  config.data.streaming = False
  # Streaming: compressed files kept decoded at once (memory: up to this many files).
  config.data.stream_cache_files = 8
  # Streaming: patches cut from each image drawn for a batch. >1 decodes fewer compressed
  # files per step (each is decoded whole), with less varied batches.
  config.data.stream_patches_per_image = 1
  # The built-in synthetic image (data.path ''): size, channels, Gaussian noise level on a
  # 0..1 signal, and how much signal and noise the channels share (0..1).
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.shape = (256, 256)  # (Y, X) or (Z, Y, X)
  config.data.synthetic.channels = 1  # channels of the image
  config.data.synthetic.noise_sigma = 0.2  # Gaussian noise on a 0..1 signal
  config.data.synthetic.correlation = 0.0  # shared signal and noise of the channels, 0..1

  # Blind-spot masking (n2v).
  config.mask = ml_collections.ConfigDict()
  # Percent of pixels that are blind spots per patch (one per grid cell of edge
  # (100 / perc_pix)**(1 / ndim)). More gives more gradient signal per step but a less
  # faithful input; the original N2V uses 0.198.
  config.mask.perc_pix = 1.5
  # What replaces a blind spot: 'uniform_withCP' (a random neighbour, the centre allowed:
  # the original N2V), 'uniform_withoutCP', 'normal_withoutCP', 'normal_additive',
  # 'normal_fitted', 'identity' (no replacement, for ablation), 'mean', 'median' (N2V2).
  config.mask.strategy = "uniform_withoutCP"
  config.mask.radius = 2  # neighbourhood radius of the replacement
  # Multi-channel: each channel its own blind spots ('independent'), or the same positions
  # in all ('shared': for channels that are correlated copies, e.g. bleed-through, so the
  # network cannot read the pixel from another channel).
  config.mask.channel_mode = "independent"
  # structN2V mask rows (odd-sized, centred), e.g. ((1, 1, 1, 1, 1),); the masked neighbours
  # get uniform noise so correlated noise cannot leak. () = off.
  config.mask.struct_mask = ()

  # The U-Net.
  config.model = ml_collections.ConfigDict()
  config.model.depth = 2  # down-sampling steps: receptive field and capacity
  # First-level features (doubled per level): 32-96 for real data; cost grows ~quadratically.
  config.model.features = 16
  config.model.kernel_size = 3  # convolution size (odd)
  config.model.batch_norm = True  # batch normalization (the original N2V uses it)
  config.model.residual = False  # output = network + input (the original BSD68 setup)
  # N2V2: MaxBlurPool and no top skip connection; with mask.strategy='median' it removes
  # N2V's checkerboard artefacts.
  config.model.n2v2 = False
  # One sub-network per channel (grouped convolutions): channels never mix. False lets
  # correlated channels help each other.
  config.model.independent_channels = False
  # Decoder up-sampling: 'nearest' (CSBDeep, the original N2V) or 'bilinear' (CAREamics;
  # PyTorch's align_corners=False).
  config.model.upsampling = "nearest"
  # Speed only: each convolution (without batch norm: the whole network) runs on this many
  # slices of the batch, which XLA:CPU runs side by side; 0 = auto (by CPU vendor, 1 on
  # GPU/TPU; n2v_jax/nn/conv.py). The same result up to float rounding.
  config.model.batch_chunks = 0
  # Speed only: how each 3x3 convolution is computed: 'direct' (XLA's), 'im2col', 'winograd'
  # (F(4x4, 3x3)), 'winograd2' (F(2x2, 3x3)); 'auto' picks per layer shape and CPU from a
  # measured table (n2v_jax/nn/conv.py; direct where the table says nothing). The same
  # function up to float rounding (n2v_jax/nn/conv_algorithms.py); 'direct' stays the
  # default until 'auto' has been checked on the BSD68 recipe (experiments/benchmark).
  config.model.conv_algorithm = "direct"
  # 'bf16_products': im2col's and F(2x2, 3x3)'s dots on bfloat16 operands, accumulated in
  # float32 (for hardware with bfloat16 units); 'float32' otherwise.
  config.model.conv_precision = "float32"
  # 'bfloat16' computes the network in bfloat16 (GPU/TPU); parameters and loss stay float32.
  config.model.dtype = "float32"

  # Optimizer (Adam) and learning-rate schedule.
  config.opt = ml_collections.ConfigDict()
  config.opt.learning_rate = 1e-3  # the (peak) rate
  # 'constant', 'cosine' (opt.warmup_steps, then down to learning_rate * opt.min_lr_ratio)
  # or 'plateau' (the original N2V): multiply by opt.plateau_factor after
  # opt.plateau_patience validation evaluations without improvement.
  config.opt.schedule = "cosine"
  config.opt.warmup_steps = 20  # cosine: linear warm-up from 0
  config.opt.min_lr_ratio = 0.05  # cosine: the end rate, as a fraction of the peak
  config.opt.plateau_factor = 0.5  # plateau: the rate is multiplied by this ...
  config.opt.plateau_patience = 10  # ... after this many evaluations without improvement
  config.opt.grad_clip = 0.0  # global-norm gradient clipping; 0 = off
  # 'mse' (Gaussian-like noise, the original) or 'mae' (heavy-tailed noise).
  config.loss = "mse"

  # The training loop.
  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 300  # optimization steps
  config.train.batch_size = 16  # patches per step (split over devices)
  config.train.log_every = 50  # host sync: a metrics.jsonl line and a progress-bar update
  # Validation loss (drives 'plateau'); a multiple of train.log_every.
  config.train.eval_every = 100
  config.train.checkpoint_every = 150  # also at the end
  config.train.keep_checkpoints = 3  # the newest ones kept (older ones are deleted)
  config.train.progress = True  # progress bar (step, loss, patches/s, ETA) on stderr
  # TensorBoard events in <workdir>/tensorboard/ (losses, learning rate, patches/s, and a
  # before/after image of a validation patch at each evaluation): tensorboard --logdir DIR.
  config.train.tensorboard = True
  # Shard each batch over all visible devices (parameters replicated).
  config.train.data_parallel = True
  # CPU only, opt-in: split the host into this many XLA devices for data parallelism
  # (0 = auto, 1 = off). Faster than one device, but XLA:CPU has aborted runs waiting in
  # the all-reduce (n2v_jax/training/runtime.py); model.batch_chunks is the default.
  config.train.cpu_devices = 1
  config.train.distributed = False  # call jax.distributed.initialize() first (multi-host)
  # Multi-host launch settings; ''/0/-1 let JAX detect them (SLURM, Open MPI, Kubernetes,
  # TPU). Set them for other launches, e.g. two local processes (docs/clusters.md).
  config.train.coordinator_address = ""  # 'host:port' of process 0 ('' = JAX_COORDINATOR_ADDRESS)
  config.train.num_processes = 0  # total processes (0 = detect)
  config.train.process_id = -1  # this process's index (-1 = detect)

  # The denoising of the training data at the end (when clean ground truth is known), and
  # prediction's defaults for this model.
  config.predict = ml_collections.ConfigDict()
  config.predict.tile = 1024  # largest tile edge; 0 = the whole image in one call
  config.predict.tta = False  # 8-fold test-time augmentation
  # Mix the noisy input back into the prediction, per image and channel, with the weight
  # that minimises Stein's unbiased risk estimate for Gaussian noise (one more pass, no clean
  # data). Stored in model.json as the default of predict and evaluate (their --blend
  # overrides it); exports (ONNX, bioimage.io) hold the network alone.
  config.predict.blend = False
  return config
