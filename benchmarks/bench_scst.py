"""The cost of self-critical training: its step against cross-entropy's.

  make bench-scst       (python -m benchmarks.bench_scst; needs runs/demo,
                         which make demo-full trains)

Both steps are the real trainer's, on the demo (Show and Tell, scene CNN
trained end to end, batches of 64 scenes) from runs/demo's weights, so the
sampled captions have trained lengths. The three kinds of step take turns
on the same 8 batches drawn beforehand (the input pipeline is left out:
it runs beside the step in training), FLAGS.rounds times each, so that
they share the machine's load alike. Prints the median milliseconds of:
  step_xent: cross-entropy (teacher forcing, backward, Adam);
  step_scst_greedy / step_scst_mean: SCST with 5 samples per image and the
    greedy / mean-of-others baseline (sampling, greedy search, reward,
    teacher-forced pass over the samples, backward, Adam; the reference
    cross-entropy is computed for the log);
  reward: CIDEr-D of 384 captions on the host (one step's greedy-baseline
    scoring), alone;
each with its ratio to step_xent.
"""

import contextlib
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import common
from im2txt_ext import search
from im2txt_ext.config import ExperimentConfig, apply_overrides
from im2txt_ext.training import scst
from im2txt_ext.training.trainer import Trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "experiments/configs/demo.json", "Experiment "
                    "config of the run.")
flags.DEFINE_string("run_dir", "runs/demo", "Trained run whose weights both "
                    "steps start from.")
flags.DEFINE_integer("rounds", 40, "Timed steps of each kind.")

KINDS = {"xent": [], "scst_greedy": ["train.scst=true"],
         "scst_mean": ["train.scst=true", "train.scst_baseline=mean"]}


def make_step(overrides, stack):
  """(a call running one training step on a given batch, its Trainer)."""
  config = apply_overrides(ExperimentConfig.load(FLAGS.config),
                           [f"train.init_from={FLAGS.run_dir}", *overrides])
  run_dir = stack.enter_context(tempfile.TemporaryDirectory())
  trainer = Trainer(config, run_dir, quiet=True)
  step_fn = trainer._step_fn(True, False)
  seed = tf.constant([0, 0])
  return lambda batch: float(step_fn(batch, tf.constant(0.0), seed)["loss"]), \
      trainer


def reward_seconds(trainer):
  """Median seconds of scoring one step's samples and greedy captions."""
  batch = next(trainer.iterator)
  features = trainer.decoder.encode(batch)
  (loss,) = [term for term in trainer.objective.terms
              if isinstance(term, scst.SelfCritical)]
  sampled = search.sample(trainer.decoder, tf.repeat(features, 5, axis=0),
                          loss.max_length,
                          tokens=loss.tokens).ids[:, 0].numpy()
  greedy = search.greedy(trainer.decoder, features, loss.max_length,
                         tokens=loss.tokens).ids[:, 0].numpy()
  image_ids = batch["image_id"].numpy()
  return common.time_call(lambda: (
      loss.rewards(np.repeat(image_ids, 5), sampled),
      loss.rewards(image_ids, greedy)), min_seconds=2.0)


def main(argv):
  del argv
  sizes = {"batch": 64, "samples": 5, "config": FLAGS.config,
           "rounds": FLAGS.rounds}
  with contextlib.ExitStack() as stack:
    steps = {kind: make_step(overrides, stack)
             for kind, overrides in KINDS.items()}
    trainer = steps["xent"][1]
    batches = [next(trainer.iterator) for _ in range(8)]
    times = {kind: [] for kind in KINDS}
    for round_ in range(FLAGS.rounds + 8):  # The first 8 warm up.
      for kind, (step, _) in steps.items():
        started = time.perf_counter()
        step(batches[round_ % len(batches)])
        if round_ >= 8:
          times[kind].append(time.perf_counter() - started)
    xent = np.median(times["xent"])
    common.emit("step_xent", 1e3 * xent, "ms", 64, sizes)
    for kind in ("scst_greedy", "scst_mean"):
      seconds = np.median(times[kind])
      common.emit(f"step_{kind}", 1e3 * seconds, "ms", 64, sizes,
                  ratio_to_xent=round(seconds / xent, 2))
    reward = reward_seconds(steps["scst_greedy"][1])
    common.emit("reward", 1e3 * reward, "ms", 64 * 6, sizes,
                ratio_to_xent=round(reward / xent, 3))


if __name__ == "__main__":
  app.run(main)
