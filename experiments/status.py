"""How far a comparison is (``python -m experiments.compare --status``).

Reads only what the driver leaves in its output directory (the feature
caches' indexes, each run's config, checkpoint state, summary and test
metrics) and runs nothing, so it can be asked while the comparison runs.
"""

import json
import os
import re
import time

from experiments import compare
from experiments.suite import ensemble_dir, run_dir

_LATEST = re.compile(r'^model_checkpoint_path: "ckpt-(\d+)"', re.MULTILINE)


def last_checkpoint(directory):
  """(step, time written) of a run's last checkpoint, or None."""
  state = os.path.join(directory, "checkpoints", "checkpoint")
  if not os.path.exists(state):
    return None
  with open(state) as f:
    match = _LATEST.search(f.read())
  return (int(match[1]), os.path.getmtime(state)) if match else None


def run_state(directory):
  """One run's state in words."""
  if os.path.exists(os.path.join(directory, "test", "metrics.json")):
    return "trained, evaluated on test"
  if os.path.exists(os.path.join(directory, "summary.json")):
    return "trained, test evaluation to do"
  checkpoint = last_checkpoint(directory)
  if checkpoint is None:
    return "not started"
  with open(os.path.join(directory, "config.json")) as f:
    steps = json.load(f)["train"]["num_steps"]
  written = time.strftime("%Y-%m-%d %H:%M", time.localtime(checkpoint[1]))
  return f"step {checkpoint[0]} of {steps} (checkpoint of {written})"


def features_state(path, encoder, size):
  done, rows = compare.features_progress(path, encoder, size)
  return ("not started" if rows is None else "done" if done == rows
          else f"{done} of {rows} images")


def report(suite, output, seeds=None):
  """The lines of the status of ``suite``'s comparison in ``output``:
  each feature cache, each experiment's run per seed, each ensemble's test
  evaluation. ``seeds``: every experiment's, where given."""
  features, _ = compare.feature_files(suite, output)
  lines = [f"{kind} features{f' at {size} px' if size else ''}: "
           f"{features_state(path, suite.encoder, size)}"
           for (kind, size), path in features.items()]
  seeds = suite.experiment_seeds(seeds)
  for experiment in suite.experiments:
    experiment_seeds = seeds[experiment.name]
    if experiment.ensemble:
      done = os.path.exists(os.path.join(
          ensemble_dir(output, experiment.name), "test", "metrics.json"))
      lines.append(f"{experiment.name} (ensemble of {experiment.ensemble} "
                   f"seeds {', '.join(map(str, experiment_seeds))}): " +
                   ("evaluated on test" if done else "test evaluation to do"))
      continue
    lines += [f"{experiment.name} seed {seed}: "
              f"{run_state(run_dir(output, experiment.name, seed))}"
              for seed in experiment_seeds]
  return lines
