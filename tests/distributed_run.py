r"""Trains a config under given strategies in a fresh process, for
tests/test_distribute.py: logical CPU devices and multi-worker servers must
be set up before TensorFlow starts, which a test process cannot redo.

  python tests/distributed_run.py --config=C --run_dir=D \
      --strategies=default,mirrored --cpus=2 --output=out.npz

Each strategy S trains in D/S (to --num_steps, if given, else the config's)
and the output holds ``S/history`` (the loss of every step of this call),
``S/replicas``, ``S/weights/I`` (every weight after training) and
``S/local/I`` (its copies on this process's replicas, stacked).
"""

import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Experiment config JSON.")
flags.DEFINE_string("run_dir", None, "Parent of one run directory per "
                    "strategy.")
flags.DEFINE_list("strategies", ["default"], "Strategy names, in order.")
flags.DEFINE_integer("cpus", 1, "Logical CPU devices to make.")
flags.DEFINE_integer("num_steps", None, "Train to this step (default: the "
                     "config's).")
flags.DEFINE_string("output", None, "Where to write the .npz of histories "
                    "and weights.")


def main(argv):
  del argv
  import numpy as np
  import tensorflow as tf
  if FLAGS.cpus > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpus)
  from im2txt_ext.config import ExperimentConfig
  from im2txt_ext.training.trainer import Trainer, learned_variables
  config = ExperimentConfig.load(FLAGS.config)
  out = {}
  for name in FLAGS.strategies:
    trainer = Trainer(config, os.path.join(FLAGS.run_dir, name),
                      strategy=name, quiet=True)
    if FLAGS.num_steps:
      trainer.config.train.num_steps = FLAGS.num_steps
    trainer.train()
    out[f"{name}/history"] = np.array(trainer.history)
    out[f"{name}/replicas"] = trainer.strategy.num_replicas_in_sync
    for i, v in enumerate(learned_variables(trainer.decoder)):
      out[f"{name}/weights/{i}"] = v.numpy()
      out[f"{name}/local/{i}"] = np.stack([
          x.numpy() for x in trainer.strategy.experimental_local_results(
              v.value)])
  np.savez(FLAGS.output, **out)
  print(f"wrote {FLAGS.output}", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "run_dir", "output"])
  app.run(main)
