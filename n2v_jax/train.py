"""Training: `python -m n2v_jax.train --config configs/default.py --workdir DIR` (also
`n2v-train`). Override any config field with --config.group.field=value.

Rerunning the same command on the same workdir resumes from the last checkpoint and ends
with the same parameters as an uninterrupted run (`training.trainer`).
"""

import json

from absl import flags

from n2v_jax import cli
from n2v_jax.preemption import Preemption
from n2v_jax.training import trainer


def _main(argv) -> None:
  del argv
  f = flags.FLAGS
  with cli.reporting_errors(), Preemption() as preemption:
    summary = trainer.train_and_evaluate(f.config, f.workdir, preemption=preemption)
  if "signal" in summary:
    cli.stopped(summary["signal"], f"stopped after step {summary['stopped_at']}, checkpoint "
                f"saved in {f.workdir}", again="resume")
  print(json.dumps(summary, indent=2))


def main() -> None:
  cli.config_flag()
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
  flags.mark_flags_as_required(["workdir"])
  cli.run(_main)


if __name__ == "__main__":
  main()
