"""Prediction with a trained workdir: an image (`predict_image`), any path (`predict_path`),
scores against clean images (`evaluate`), all driven by one `PredictOptions`."""

from n2v_jax.inference.evaluation import evaluate
from n2v_jax.inference.options import DEFAULT_TILE, PredictOptions
from n2v_jax.inference.paths import predict_path
from n2v_jax.inference.predictor import Predictor, load_predictor, predict_image

__all__ = ["DEFAULT_TILE", "PredictOptions", "Predictor", "evaluate", "load_predictor",
           "predict_image", "predict_path"]
