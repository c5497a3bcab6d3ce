"""Training: one model (`train_and_evaluate`), K models in one program (`train_many`), sweeps."""

from n2v_jax.training.multi import train_many
from n2v_jax.training.trainer import train_and_evaluate

__all__ = ["train_and_evaluate", "train_many"]
