"""Every choice list of the config and the command lines, defined once.

The code that implements a choice and the config validation
(`n2v_jax.training.config.validate`) both read these tuples, so a new option is added
here and where it is implemented, and validation knows it at once.
"""

# config.algorithm: blind spots in the noisy images (n2v), or training on (input, target)
# pairs: a second noisy acquisition (n2n) or the clean image (care).
ALGORITHMS = ("n2v", "n2n", "care")
PAIRED_ALGORITHMS = ("n2n", "care")

# mask.strategy: what replaces a blind spot (n2v_jax.nn.masking).
STRATEGIES = ("uniform_withCP", "uniform_withoutCP", "normal_withoutCP", "normal_additive",
              "normal_fitted", "identity", "mean", "median")
# Replacements computed from the neighbours alone (the centre excluded, no randomness):
# with a residual output they let the noisy centre pixel through (validate refuses that).
CENTRE_FREE_DETERMINISTIC = ("mean", "median")
# mask.channel_mode: own blind spots per channel, or the same positions in all.
CHANNEL_MODES = ("independent", "shared")

LOSSES = ("mse", "mae")  # config.loss (n2v_jax.nn.losses)
SCHEDULES = ("constant", "cosine", "plateau")  # opt.schedule (n2v_jax.training.steps)
NORMALIZATIONS = ("meanstd", "percentile")  # data.normalization (n2v_jax.data.normalizer)
TRANSFORMS = ("none", "anscombe")  # data.transform (n2v_jax.data.normalizer)
MODEL_DTYPES = ("float32", "bfloat16")  # model.dtype (n2v_jax.nn.unet)
UPSAMPLINGS = ("nearest", "bilinear")  # model.upsampling (n2v_jax.nn.unet)
# model.conv_algorithm: how each 3x3 convolution is computed (n2v_jax.nn.conv_algorithms);
# auto: per layer shape and CPU, from conv.AUTO_ALGORITHMS.
CONV_ALGORITHMS = ("auto", "direct", "im2col", "winograd", "winograd2")
CONV_PRECISIONS = ("float32", "bf16_products")  # model.conv_precision: the dots' operands

# predict --dtype: float32, or the input's own type (integers rescaled, see
# n2v_jax.inference.dtypes).
OUTPUT_DTYPES = ("float32", "input")
