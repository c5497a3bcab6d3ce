"""Fitting a noise model for Probabilistic N2V:
`python -m n2v_jax.noise_model --output DIR (--noisy FRAMES.tif [--signal CLEAN.tif] |
--workdir N2V_WORKDIR [--input NOISY])` (also `n2v-noise-model`).

From calibration data (noisy frames and their clean signal, or a static stack whose frames
are averaged), or bootstrapped from a trained N2V workdir (its predictions as the signal).
Writes DIR/noise_model.json, one .npy per channel and DIR/noise_model.png
(inference.noise_fit).
"""

from absl import flags

from n2v_jax import cli
from n2v_jax.errors import N2VError


def _main(argv) -> None:
  del argv
  from n2v_jax.inference import noise_fit
  f = flags.FLAGS
  with cli.reporting_errors():
    if bool(f.noisy) == bool(f.workdir):
      raise N2VError("give either --noisy (calibration frames) or --workdir (bootstrap from "
                     "a trained N2V model)")
    if f.noisy:
      signal, observation = noise_fit.calibration_pairs(f.noisy, f.signal, f.axes or None)
    else:
      signal, observation = noise_fit.bootstrap_pairs(f.workdir, f.input, f.axes or None)
    kwargs = ({"components": f.components, "coefficients": f.coefficients, "steps": f.steps}
              if f.kind == "gmm" else {"bins": f.bins})
    models = noise_fit.fit(signal, observation, f.kind, **kwargs)
    figure = noise_fit.save(models, f.output, signal, f.overwrite)
  print(f"wrote {len(models)} noise model(s) to {f.output} ({figure})")


def main() -> None:
  flags.DEFINE_string("output", None, "Folder for noise_model.json, its arrays and figure.")
  flags.DEFINE_string("noisy", "", "Calibration: noisy frames (TIFF), e.g. a static stack.")
  flags.DEFINE_string("signal", "", "Calibration: their clean signal; default: the average "
                      "of the noisy frames (S/T axis).")
  flags.DEFINE_string("workdir", "", "Bootstrap: a trained N2V workdir (its predictions are "
                      "the signal).")
  flags.DEFINE_string("input", None, "Bootstrap: noisy images; default: the training data.")
  flags.DEFINE_string("axes", "", "Axes of the noisy images, e.g. SYX; default: from the file.")
  flags.DEFINE_enum("kind", "gmm", ["gmm", "histogram"], "Gaussian mixture or histogram.")
  flags.DEFINE_integer("components", 3, "GMM: Gaussians in the mixture.")
  flags.DEFINE_integer("coefficients", 2, "GMM: polynomial coefficients (degree + 1).")
  flags.DEFINE_integer("steps", 2000, "GMM: Adam steps of the maximum-likelihood fit.")
  flags.DEFINE_integer("bins", 256, "Histogram: bins per axis.")
  flags.DEFINE_bool("overwrite", False, "Replace a noise model in --output.")
  flags.mark_flags_as_required(["output"])
  cli.run(_main)


if __name__ == "__main__":
  main()
