"""Default main job: N2V on a built-in synthetic image with known clean ground truth.

    python -m n2v_jax.train --config configs/default.py --workdir runs/default

No download needed. Makes a 256x256 noisy image (Gaussian noise, sigma 0.2 on a
0..1 scale), trains a small U-Net for 300 steps (71-131 s on 2 CPU cores, compilation
included), denoises the image and writes `summary.json` (`psnr_noisy` 13.98 dB,
`psnr_denoised` 28.46-28.52 dB, by CPU) and `before_after.png`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # the one seed: data split, patches, masks, init, synthetic data
  # 'n2v' (self-supervised: blind spots in the noisy images), or the supervised ceilings on
  # pairs from data.target_path: 'n2n' (target: a second noisy acquisition of the same
  # scene) and 'care' (target: the clean image); same U-Net, data pipeline and patches.
  config.algorithm = "n2v"

  # Training data. An empty path means the built-in synthetic image.
  config.data = ml_collections.ConfigDict()
  config.data.path = ""  # a TIFF, a folder of TIFFs, or '' for synthetic data
  config.data.axes = ""  # e.g. 'YX', 'SYX', 'CYX', 'SCYX', 'ZYX'; '' = read from the file
  config.data.clean_path = ""  # optional clean ground truth (same shape) for PSNR at the end
  config.data.target_path = ""  # n2n/care: training targets aligned with data.path
  config.data.patch_shape = (64, 64)  # (Y, X) or (Z, Y, X); multiples of 2**model.depth
  config.data.val_fraction = 0.1  # held-out images (or, for one image, the last rows)
  config.data.val_path = ""  # explicit validation TIFF(s); overrides val_fraction
  config.data.max_val_patches = 64  # cap on fixed validation patches
  config.data.augment = True  # random 90-degree rotations and flips (square XY patches)
  config.data.normalization = "meanstd"  # per-channel 'meanstd' or 'percentile'
  config.data.percentiles = (1.0, 99.0)  # used by 'percentile' normalization
  # 'anscombe' for photon counts (noise growing with intensity): 2*sqrt(x + 3/8) before
  # normalization, inverted after prediction (n2v_jax.intensity); 'none' keeps data units.
  config.data.transform = "none"
  # Single-channel files grouped into multi-channel fields by file name (n2v_jax.fields).
  config.data.channel_pattern = ""  # '' = off; 'phenix' or a regex with (?P<channel>...)
  config.data.channels = ()  # channel ids to use, in order, e.g. (5, 3, 2); () = all found
  config.data.channel_names = ()  # names for those channels, e.g. ('DNA', 'RNA', 'AGP')
  # Data larger than memory (n2v_jax.streaming): files memory-mapped or read on demand,
  # patches sampled on the host per (seed, step); normalization from a pixel subsample.
  config.data.streaming = False
  config.data.stream_cache_files = 8  # compressed files kept decoded (LRU) while streaming
  # Patches cut from each image drawn for a batch: >1 decodes fewer compressed files per
  # step (each costs ~20 ms per 1080x1080 plane), at the cost of less varied batches.
  config.data.stream_patches_per_image = 1
  # Built-in synthetic data (used when path is '').
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.shape = (256, 256)
  config.data.synthetic.channels = 1
  config.data.synthetic.noise_sigma = 0.2  # Gaussian, on a 0..1 signal scale
  config.data.synthetic.correlation = 0.0  # couples channels' signal and noise (0..1)

  # Blind-spot masking.
  config.mask = ml_collections.ConfigDict()
  config.mask.perc_pix = 1.5  # percent of pixels masked per patch (one per grid cell)
  config.mask.strategy = "uniform_withoutCP"  # replacement: see n2v_jax.masking.STRATEGIES
  config.mask.radius = 2  # neighbourhood radius for the replacement
  config.mask.channel_mode = "independent"  # 'independent' or 'shared' coordinates
  config.mask.struct_mask = ()  # structN2V mask rows, e.g. ((1, 1, 1, 1, 1),); () = off

  # U-Net.
  config.model = ml_collections.ConfigDict()
  config.model.depth = 2  # down-sampling steps
  config.model.features = 16  # first-level features, doubled per level
  config.model.kernel_size = 3
  config.model.batch_norm = True
  config.model.residual = False  # add the input to the output
  config.model.n2v2 = False  # MaxBlurPool and no top skip connection (N2V2)
  config.model.independent_channels = False  # one sub-network per channel
  config.model.upsampling = "nearest"  # 'nearest' (CSBDeep/N2V) or 'bilinear' (CAREamics)
  config.model.batch_chunks = 0  # speed only: convs on batch slices (0 = auto: up to 8-32 on CPU)
  config.model.dtype = "float32"  # 'bfloat16' for mixed precision on GPU/TPU

  # Optimizer (Adam) and learning-rate schedule.
  config.opt = ml_collections.ConfigDict()
  config.opt.learning_rate = 1e-3
  config.opt.schedule = "cosine"  # 'constant', 'cosine' (with warm-up) or 'plateau'
  config.opt.warmup_steps = 20
  config.opt.min_lr_ratio = 0.05  # cosine ends at learning_rate * min_lr_ratio
  config.opt.plateau_factor = 0.5  # 'plateau': multiply the rate by this ...
  config.opt.plateau_patience = 10  # ... after this many evaluations without improvement
  config.opt.grad_clip = 0.0  # global-norm clipping; 0 = off
  config.loss = "mse"  # 'mse' or 'mae'

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 300
  config.train.batch_size = 16
  config.train.log_every = 50  # host sync + metrics.jsonl line
  config.train.eval_every = 100  # validation loss (also drives 'plateau'); multiple of log_every
  config.train.checkpoint_every = 150
  config.train.keep_checkpoints = 3
  config.train.progress = True  # progress bar on stderr
  # TensorBoard events in <workdir>/tensorboard/ (losses, learning rate, patches/s, and a
  # before/after image of a validation patch at each evaluation): tensorboard --logdir DIR
  config.train.tensorboard = True
  config.train.data_parallel = True  # shard batches over all visible devices
  # CPU only, opt-in: split the host into this many XLA devices for data parallelism
  # (0 = auto, 1 = off). ~1.85x faster than 1 device on 2 cores, but XLA:CPU twice aborted
  # a run waiting in the all-reduce: n2v_jax/runtime.py. model.batch_chunks is the default.
  config.train.cpu_devices = 1
  config.train.distributed = False  # call jax.distributed.initialize() (multi-host)
  # With distributed=True: ''/0/-1 let JAX detect them (SLURM, Open MPI, Kubernetes, TPU);
  # set them for other launches, e.g. two local processes (README, "Multi-host").
  config.train.coordinator_address = ""  # 'host:port' of process 0 ('' = JAX_COORDINATOR_ADDRESS)
  config.train.num_processes = 0  # total processes (0 = detect)
  config.train.process_id = -1  # this process's index (-1 = detect)

  # Denoising of the training data at the end (when clean ground truth is known).
  config.predict = ml_collections.ConfigDict()
  config.predict.tile = 1024  # largest tile edge (inference.DEFAULT_TILE); 0 = whole image
  config.predict.tta = False  # 8-fold test-time augmentation
  # Mix the noisy input back into the prediction with the weight that minimises SURE for
  # Gaussian noise (n2v_jax.inference.sure_blend; one more pass): the default of predict
  # and evaluate for this run's model (their --blend overrides it). Off: the network alone.
  config.predict.blend = False
  return config
