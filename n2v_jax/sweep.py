"""Sweeps: `python -m n2v_jax.sweep --config experiments/<study>/config.py --workdir DIR`
(also `n2v-sweep`): every point of a study trained into DIR/<point>/, then the tables and
the plot (`training.sweep`). Rerun to continue; finished points are skipped."""

import os

from absl import flags

from n2v_jax import cli
from n2v_jax.preemption import Preemption
from n2v_jax.training import sweep


def _main(argv) -> None:
  del argv
  f = flags.FLAGS
  if not f.no_compile_cache:  # points share most programs (init, eval, predict)
    import jax
    jax.config.update("jax_compilation_cache_dir", os.path.join(f.workdir, ".jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  with cli.reporting_errors(), Preemption() as preemption:
    result = sweep.run_sweep(f.config, f.workdir, vmap=not f.no_vmap, max_vmap=f.max_vmap,
                             log=print, preemption=preemption)
  if "signal" in result:
    cli.stopped(result["signal"], f"stopped after step {result['stopped_at']}, checkpoint "
                f"saved in {f.workdir}", again="resume")


def main() -> None:
  flags.DEFINE_string("config", None, "The study: experiments/<study>/config.py.")
  flags.DEFINE_string("workdir", None, "One sub-folder per point, and the tables.")
  flags.DEFINE_bool("no_vmap", False, "Train every point on its own.")
  flags.DEFINE_integer("max_vmap", 16, "Most models in one program.")
  flags.DEFINE_bool("no_compile_cache", False, "Do not keep compiled programs in "
                    "DIR/.jax_cache between points.")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(_main)


if __name__ == "__main__":
  main()
