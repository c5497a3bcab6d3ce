"""n2v_jax: Noise2Void self-supervised denoising in JAX/Flax."""

__version__ = "0.1.0"
