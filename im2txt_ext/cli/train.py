r"""Trains a captioning model from an experiment config.

  im2txt-train --config=experiments/configs/demo.json \
      --run_dir=runs/demo [--set train.num_steps=500 ...]

Running the same command again resumes from the run's last checkpoint,
with the config saved in the run; --set still applies, e.g.
--set train.num_steps=3000 to train a finished run further. SIGTERM or
Ctrl-C saves the step it is at, then stops with the shell's status for
that signal (143 or 130).
On several devices: --strategy=mirrored (all local GPUs), or
--strategy=multi_worker with TF_CONFIG set on every machine (the same
command on each; a shared run directory), or --strategy=tpu [--tpu=NAME].
"""

import json
import sys

from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.config import ExperimentConfig, apply_overrides

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_string("config", None, "Experiment config JSON (fields of "
                      "im2txt_ext.config.ExperimentConfig; omitted fields "
                      "keep their defaults).")
  flags.DEFINE_string("run_dir", None, "Run directory for config, vocabulary, "
                      "checkpoints and TensorBoard logs. A run that has a "
                      "checkpoint resumes with its saved config (--config is "
                      "then ignored, --set applies).")
  flags.DEFINE_multi_string("set", [], "Override one config field, e.g. "
                            "--set train.num_steps=500 (value parsed as "
                            "JSON).")
  flags.DEFINE_boolean("quiet", False, "No progress bar or sample captions, "
                       "only a line per validation (for logs).")
  flags.DEFINE_enum("strategy", None, ["default", "mirrored", "multi_worker",
                                       "tpu"],
                    "Devices to train on, overriding train.strategy (also on "
                    "resume): one device, all local GPUs, the machines of "
                    "TF_CONFIG, or a TPU.")
  flags.DEFINE_string("tpu", "", "TPU name or grpc:// address for "
                      "--strategy=tpu (default: the local TPU).")
  flags.mark_flags_as_required(["run_dir"])


def main(argv):
  del argv
  from im2txt_ext.training import distribute  # Imports TensorFlow.
  from im2txt_ext.training.stopping import TrainingStopped
  from im2txt_ext.training.trainer import Trainer
  config = ExperimentConfig.load(FLAGS.config) if FLAGS.config else \
      ExperimentConfig()
  config = apply_overrides(config, FLAGS.set)
  strategy = None
  if FLAGS.strategy or FLAGS.tpu:
    strategy = distribute.make_strategy(FLAGS.strategy or "tpu", FLAGS.tpu)
  trainer = Trainer(config, FLAGS.run_dir, strategy=strategy,
                    quiet=FLAGS.quiet, overrides=FLAGS.set)
  try:
    summary = trainer.train()
  except TrainingStopped as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_status)
  print(json.dumps(summary))


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
