"""The sample: the default job's synthetic image, noisy, with its clean reference, so that a
first-time user can train, denoise and score without a file of their own."""

from n2v_jax.configs import default
from n2v_jax.data import synthetic


def noisy_sample() -> list[tuple]:
  config = default.get_config()
  syn = config.data.synthetic
  noisy, clean = synthetic.noisy_pair(config.seed, tuple(syn.shape), 1, syn.noise_sigma,
                                      syn.correlation)
  return [(noisy[..., 0], {"name": "noisy"}, "image"),
          (clean[..., 0], {"name": "clean", "visible": False}, "image")]
