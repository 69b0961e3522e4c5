r"""``make compare`` and ``make flickr8k``: every experiment of a suite,
trained, evaluated and reported, through the library's public commands.

  python -m experiments.compare --suite=experiments/suites/scenes.json \
      --data=data/scenes --output=results/scenes

Steps, each skipped when its output exists (so an interrupted comparison
resumes where it stopped, and a killed training run from its checkpoint;
SIGTERM or Ctrl-C reaches its trainings, which save their step first):
  1. im2txt-extract-features: cached features of every image (spatial for
     attention; pooled for the no-attention models and retrieval, as the
     spatial ones' mean where those are extracted too);
  2. im2txt-word2vec on the training captions, where an experiment asks;
  3. per experiment and seed: im2txt-train (checkpoints picked by validation
     BLEU-4), then im2txt-evaluate on the test split (beam search); an
     experiment that sets "data.features=" trains and is evaluated on the
     images themselves (e.g. to fine-tune the CNN), and has no features
     extracted for it. --jobs=N runs up to N of these side by side, an
     experiment that starts from another's run ("{run:NAME}") after that
     run;
  4. im2txt-retrieve: the nearest-neighbour consensus baseline;
  5. the report (experiments/report.py): results.md, results.json,
     curves.png, attention figures and report.html; a row reports the seeds
     just run and every other of its own already evaluated, so --seeds=2
     adds seed 2 to a row of seeds 0 and 1.
The same command with --status says how far it is (experiments/status.py).
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time

from absl import flags

from experiments.suite import RUN_PLACEHOLDER, Suite, ensemble_dir, run_dir
from im2txt_ext.cli import run
from im2txt_ext.encoders import encoder_side
from im2txt_ext.errors import InputError
from im2txt_ext.training import stopping  # Signals only: no TensorFlow.

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_string("suite", "experiments/suites/scenes.json", "Suite file "
                      "(experiments/suite.py explains its fields).")
  flags.DEFINE_string("data", "data/scenes", "Data directory the suite's file "
                      "names are relative to.")
  flags.DEFINE_string("output", None, "Results directory; default "
                      "results/<suite name>.")
  flags.DEFINE_list("seeds", None, "Override the suite's seeds (every "
                    "experiment's), e.g. 0,1: those are run, and each row "
                    "reports them with its own seeds already evaluated.")
  flags.DEFINE_string("encoder", None, "Override the suite's encoder (a name "
                      "of im2txt_ext.encoders).")
  flags.DEFINE_string("encoder_weights", None, "Override the suite's encoder "
                      "weights: imagenet or a weights file.")
  flags.DEFINE_list("only", None, "Run only these experiments (by name).")
  flags.DEFINE_integer("jobs", 1, "Trainings (an experiment and seed, with "
                       "its test evaluation) run side by side; each is its "
                       "own process, so on a CPU the cores are shared.",
                       lower_bound=1)
  flags.DEFINE_boolean("status", False, "Print how far the comparison in "
                       "--output is (features, each run's last checkpoint, "
                       "test evaluations) and exit; runs nothing.")
  flags.DEFINE_boolean("meteor", True, "Compute METEOR (needs Java) where "
                       "the suite's table shows it.")


class Children:
  """The steps' running processes. ``stop(signal_number)``, the driver's
  handler of SIGTERM and SIGINT, starts no step after it and passes SIGTERM
  on to each, so a training saves its step before it ends; not SIGINT: a
  terminal's Ctrl-C reaches the whole process group, and a second one
  would interrupt the trainings before they save. A second Ctrl-C raises
  KeyboardInterrupt in the driver."""

  def __init__(self):
    self.lock = threading.RLock()  # The handler runs in the main thread.
    self.processes = set()
    self.stopped_by = None

  def start(self, what, command, **popen):
    """Popen of ``command``; InputError once the driver was stopped."""
    with self.lock:
      if self.stopped_by is not None:
        raise InputError(f"{what}: not started, the comparison was stopped "
                         f"by {self.stopped_by}; the same command resumes it")
      process = subprocess.Popen(command, **popen)
      self.processes.add(process)
      return process

  def ended(self, process):
    with self.lock:
      self.processes.discard(process)

  def stop(self, signal_number, frame=None):
    del frame
    with self.lock:
      if signal_number == signal.SIGINT and self.stopped_by == "SIGINT":
        raise KeyboardInterrupt
      self.stopped_by = signal.Signals(signal_number).name
      if signal_number != signal.SIGINT:
        for process in self.processes:
          process.send_signal(signal_number)


CHILDREN = Children()


class Step:
  """Runs the numbered steps of a comparison, each a logged subprocess;
  ``side_by_side``: steps may run in several threads at once, so each
  prints a line when it starts and one when it ends."""

  def __init__(self, output, total, side_by_side=False):
    self.logs = os.path.join(output, "logs")
    os.makedirs(self.logs, exist_ok=True)
    self.done, self.total = 0, total
    self.side_by_side = side_by_side
    self.lock = threading.RLock()

  def announce(self, what, end="\n"):
    """Numbers the next step and prints ``[i/n] what`` and ``end`` as one
    write: threads' lines never interleave. Returns the number."""
    with self.lock:
      self.done += 1
      number = f"[{self.done}/{self.total}]"
      self.say(f"{number} {what}{end}")
    return number

  def say(self, text):
    """Writes ``text`` to stdout in one call under the lock (print writes
    its end apart)."""
    with self.lock:
      sys.stdout.write(text)
      sys.stdout.flush()

  def __call__(self, what, module, args, log_name):
    """Runs ``python -m module args``; returns its stdout. A failure raises
    InputError with the command's last error line and its log file. The
    log is appended to, each run under a line with its time and command,
    so a resumed training's log keeps what it printed before."""
    number = self.announce(f"{what} ...",
                           end="\n" if self.side_by_side else " ")
    ended = f"{number} {what}: " if self.side_by_side else ""
    log = os.path.join(self.logs, log_name + ".log")
    started = time.time()
    with open(log, "a") as f:
      f.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')}: python -m {module} "
              f"{' '.join(args)}\n")
      f.flush()
      this_run = f.tell()
      process = CHILDREN.start(what, [sys.executable, "-m", module, *args],
                               stdout=subprocess.PIPE, stderr=f, text=True)
      stdout = []
      try:
        for line in process.stdout:  # Into the log as it comes: a long
          f.write(line)              # training's validation lines show
          f.flush()                  # how far it is.
          stdout.append(line)
        returncode = process.wait()
      finally:
        CHILDREN.ended(process)
    seconds = time.time() - started
    if returncode:
      with open(log) as f:
        f.seek(this_run)
        lines = [line.strip() for line in f if line.strip()]
      last = next((line for line in reversed(lines)
                   if line.startswith(("error:", "stopped by"))
                   or "Error" in line),
                  lines[-1] if lines else "no output")
      # A training stopped by SIGTERM or Ctrl-C says so in its last line.
      stopped = returncode in {128 + number for number in stopping.SIGNALS}
      self.say(f"{ended}{'stopped' if stopped else 'failed'}\n")
      raise InputError(f"{what}{':' if stopped else ' failed:'} "
                       f"{last[:300]} (full log)", log)
    self.say(f"{ended}{seconds:.0f} s\n")
    return "".join(stdout)

  def skip(self, what):
    self.announce(f"{what}: done before, skipped")


def side_by_side(tasks, jobs):
  """Runs ``tasks`` (key -> (keys it needs done first, a function of no
  arguments)) in up to ``jobs`` threads, each task once those it needs
  have finished; needs outside ``tasks`` are taken as met. After a failure
  no task starts; those running finish, then the first error is raised."""
  pending = dict(tasks)
  finished, running, errors = set(), {}, []
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    while running or (pending and not errors):
      ready = [key for key, (needs, _) in pending.items()
               if not (set(needs) & set(tasks)) - finished]
      for key in ready[:0 if errors else jobs - len(running)]:
        running[pool.submit(pending.pop(key)[1])] = key
      if not running:
        raise ValueError(f"tasks {sorted(pending)} wait on each other")
      done, _ = concurrent.futures.wait(
          running, return_when=concurrent.futures.FIRST_COMPLETED)
      for future in done:
        key = running.pop(future)
        if future.exception():
          errors.append(future.exception())
        else:
          finished.add(key)
  if errors:
    raise errors[0]


def feature_files(suite, output):
  """The cached features a comparison in ``output`` needs, in the order it
  extracts them ({(kind, image side): path}: retrieval needs the suite's
  pooled ones; spatial ones come first, the pooled are their mean), and
  {experiment name: the (kind, image side) it reads}. An experiment that
  trains on the images (and an ensemble of its runs) needs none."""
  reads = {e.name: (feature_kind(e.config), suite.image_size_of(e))
           for e in suite.experiments}
  on_images = {e.name for e in suite.experiments if e.trains_on_images()}
  needed = sorted({reads[e.name] for e in suite.experiments
                   if (e.ensemble or e.name) not in on_images}
                  | {("pooled", suite.image_size)}, reverse=True)
  return {key: features_path(output, suite, *key) for key in needed}, reads


def features_path(output, suite, kind, size):
  """Where a comparison caches features of ``kind`` at image side ``size``;
  those at the suite's size keep the name without a size."""
  own = f"_{size}px" if size != suite.image_size else ""
  return os.path.join(output, "features", f"{suite.encoder}{own}_{kind}.npy")


def features_progress(path, encoder, size):
  """(rows done, rows) of the features cache ``path``, (0, None) where it
  is not started; InputError where it holds features of another encoder or
  image side (never reused as if they were these)."""
  from im2txt_ext.encoders.feature_index import read_index
  if not os.path.exists(path):
    return 0, None
  index = read_index(path)
  side = encoder_side(encoder, size)
  if (index["encoder"], index["image_size"]) != (encoder, side):
    raise InputError(
        f"features of {index['encoder']} at {index['image_size']} px, but "
        f"the suite asks {encoder} at {side} px: move the file away or give "
        "another --output", path)
  return index["rows_done"], len(index["image_ids"])


def features_complete(path, encoder, size):
  """Whether ``path`` holds every row (see ``features_progress``)."""
  done, rows = features_progress(path, encoder, size)
  return done == rows


def check_run_image_size(directory, encoder, size):
  """InputError where a run of an earlier comparison (finished, or to be
  resumed) was trained on images of another side than ``size``."""
  from im2txt_ext import runs
  from im2txt_ext.config import ExperimentConfig
  path = os.path.join(directory, runs.CONFIG_FILE)
  if not os.path.exists(path):
    return
  trained, side = (runs.image_size(ExperimentConfig.load(path)),
                   encoder_side(encoder, size))
  if trained != side:
    raise InputError(f"trained at {trained} px, but the suite asks {side} "
                     "px: move the run away or give another --output",
                     directory)


def feature_kind(config_path):
  from im2txt_ext.config import ExperimentConfig
  from im2txt_ext.models import registered
  return registered(ExperimentConfig.load(config_path).model.decoder) \
      .feature_kind


def expand(setting, output, seed, word2vec):
  """An experiment's override with its placeholders filled in: "{word2vec}"
  by the suite's word2vec vectors, "{run:NAME}" by the run directory of
  experiment NAME with the same seed, which must have been trained."""
  return RUN_PLACEHOLDER.sub(
      lambda match: trained_run(output, match.group(1), seed, setting),
      setting.replace("{word2vec}", word2vec))


def trained_run(output, name, seed, needed_by):
  """The run directory of experiment ``name`` with ``seed``; InputError
  where it has not been trained (``needed_by`` needs it)."""
  directory = run_dir(output, name, seed)
  if not os.path.exists(os.path.join(directory, "summary.json")):
    raise InputError(f"{needed_by} needs experiment {name} trained with "
                     f"seed {seed} first", directory)
  return directory


def compare(suite, data_dir, output, seeds=None, meteor=True, command="",
            order=None, jobs=1):
  """Runs the comparison; returns the report's table (markdown),
  then the suite's sample captions.
  ``seeds``: every experiment's, where given (default: the suite's);
  ``command``: the command line that ran it, and ``order``: the whole
  suite's experiment names where ``suite`` holds some, for the results
  file; ``jobs``: trainings run side by side."""
  from experiments import report
  paths = suite.paths(data_dir)
  seeds = suite.experiment_seeds(seeds)
  started = time.time()
  features, reads = feature_files(suite, output)
  for experiment in suite.experiments:  # An ensemble's: its members'.
    for directory in experiment.run_dirs(output, seeds[experiment.name]):
      check_run_image_size(directory, suite.encoder,
                           reads[experiment.name][1])
  uses_word2vec = any("{word2vec}" in s for e in suite.experiments
                      for s in e.set)
  step = Step(output, len(features) + uses_word2vec + sum(
      1 if e.ensemble else 2 * len(seeds[e.name]) for e in suite.experiments)
              + 1, side_by_side=jobs > 1)
  captions = ",".join(dict.fromkeys(
      paths[k] for k in ("train_captions", "val_captions", "test_captions")))
  for (kind, size), path in features.items():
    log = "features_" + os.path.basename(path)[:-len(".npy")]
    at = f" at {size} px" if size else ""
    if features_complete(path, suite.encoder, size):
      step.skip(f"{kind} features{at}")
    elif kind == "pooled" and ("spatial", size) in features:
      step(f"pooled features{at} (the mean of the spatial ones)",
           "im2txt_ext.cli.extract_features",
           [f"--from_spatial={features['spatial', size]}",
            f"--output={path}"], log)
    else:
      step(f"{kind} features ({suite.encoder}{at})",
           "im2txt_ext.cli.extract_features",
           [f"--encoder={suite.encoder}",
            f"--weights={suite.encoder_weights}", f"--captions={captions}",
            f"--images={paths['images_dir']}", f"--kind={kind}",
            f"--output={path}", *([f"--image_size={size}"] if size else [])],
           log)
  word2vec = os.path.join(output, "word2vec")
  if uses_word2vec:
    if os.path.exists(os.path.join(word2vec, "vectors.txt")):
      step.skip("word2vec")
    else:
      step("word2vec on the training captions", "embeddings.cli",
           [f"--corpus={paths['train_captions']}", f"--output_dir={word2vec}",
            *suite.word2vec], "word2vec")

  def training(experiment, seed):
    return lambda: train_and_evaluate(
        step, suite, experiment, seed, output, paths,
        features.get(reads[experiment.name], ""), reads[experiment.name][1],
        word2vec, meteor)
  def ensemble(experiment):
    return lambda: evaluate_ensemble(
        step, suite, experiment, seeds[experiment.name], output, paths,
        features.get(reads[experiment.name], ""), meteor)
  tasks = {(experiment.name, seed): (
      [(name, seed) for name in experiment.runs_needed()],
      training(experiment, seed))
           for experiment in suite.trained()
           for seed in seeds[experiment.name]}
  tasks.update({(experiment.name, "ensemble"): (
      [(experiment.ensemble, seed) for seed in seeds[experiment.name]],
      ensemble(experiment))
                for experiment in suite.experiments if experiment.ensemble})
  side_by_side(tasks, jobs)

  retrieval = os.path.join(output, "retrieval")
  if os.path.exists(os.path.join(retrieval, "metrics.json")):
    step.skip("retrieval baseline")
  else:
    step("retrieval baseline", "im2txt_ext.cli.retrieve",
         [f"--features={features['pooled', suite.image_size]}",
          f"--train_captions={paths['train_captions']}",
          f"--train_split={suite.train_split}",
          f"--captions={paths['test_captions']}",
          f"--split={suite.test_split}",
          f"--neighbours={suite.retrieval_neighbours}",
          f"--consensus={suite.retrieval_consensus}",
          f"--output_dir={retrieval}", f"--meteor={meteor}", "--show=0"],
         "retrieval")
  print("writing the report ...", flush=True)
  table = report.write_report(suite, output,
                              suite.reported_seeds(output, seeds), paths,
                              time.time() - started, command, order)
  print(f"wrote {output}/results.md, report.html, curves.png "
        f"({time.time() - started:.0f} s in all)")
  return table


def train_and_evaluate(step, suite, experiment, seed, output, paths,
                       features, image_size, word2vec, meteor):
  """im2txt-train then im2txt-evaluate of one experiment and seed, on
  ``features`` of images at side ``image_size``."""
  directory = run_dir(output, experiment.name, seed)
  label = f"{experiment.name} seed {seed}"
  summary_path = os.path.join(directory, "summary.json")
  if os.path.exists(summary_path):
    step.skip(f"train {label}")
  else:
    overrides = [
        f"data.train_captions={paths['train_captions']}",
        f"data.val_captions={paths['val_captions']}",
        f"data.images_dir={paths['images_dir']}",
        f"data.train_split={suite.train_split}",
        f"data.val_split={suite.val_split}",
        f"data.features={features}",
        f"data.image_size={image_size}",
        f"model.encoder={suite.encoder}",
        f"model.encoder_weights={suite.encoder_weights}",
        f"train.seed={seed}",
        *(expand(s, output, seed, word2vec) for s in experiment.set)]
    resumed = os.path.isdir(os.path.join(directory, "checkpoints"))
    out = step(f"train {label}", "im2txt_ext.cli.train",
               [f"--config={experiment.config}", f"--run_dir={directory}",
                "--quiet", *(f"--set={o}" for o in overrides)],
               f"train_{experiment.name}_seed{seed}")
    summary = json.loads(out.strip().splitlines()[-1])
    # "seconds" covers every part: the checkpoints keep the time so far.
    summary["resumed"] = resumed
    with open(summary_path, "w") as f:
      json.dump(summary, f, indent=2)
  evaluate(step, suite, experiment, label, [directory],
           evaluation_features(directory, features), paths, meteor,
           f"evaluate_{experiment.name}_seed{seed}")


def evaluation_features(directory, features):
  """What the run in ``directory`` is evaluated on: ``features``, or ""
  (the images, through its own CNN) where it was trained on the images (an
  experiment that sets "data.features=", e.g. to fine-tune the CNN)."""
  from im2txt_ext import runs
  from im2txt_ext.config import ExperimentConfig
  cached = ExperimentConfig.load(os.path.join(
      directory, runs.CONFIG_FILE)).data.features
  return features if cached else ""


def evaluate_ensemble(step, suite, experiment, seeds, output, paths,
                      features, meteor):
  """im2txt-evaluate of the runs of ``experiment.ensemble`` with ``seeds``
  searched as one model, on ``features`` (see evaluation_features)."""
  members = [trained_run(output, experiment.ensemble, seed,
                         f"ensemble {experiment.name}") for seed in seeds]
  evaluate(step, suite, experiment, f"{experiment.name} (ensemble of "
           f"{experiment.ensemble} seeds {', '.join(map(str, seeds))})",
           members, evaluation_features(members[0], features), paths,
           meteor, f"evaluate_{experiment.name}",
           ensemble_dir(output, experiment.name))


def evaluate(step, suite, experiment, label, members, features, paths,
             meteor, log_name, directory=None):
  """The test evaluation of one run or of an ensemble of ``members``
  (written to ``directory``/test, default the run's), on ``features``
  ("": on the images); skipped where done."""
  test_dir = os.path.join(directory or members[0], "test")
  if os.path.exists(os.path.join(test_dir, "metrics.json")):
    step.skip(f"evaluate {label}")
    return
  step(f"evaluate {label}", "im2txt_ext.cli.evaluate",
       [f"--run_dir={','.join(members)}",
        f"--captions={paths['test_captions']}",
        f"--split={suite.test_split}", f"--images_dir={paths['images_dir']}",
        *([f"--features={features}"] if features else []),
        f"--max_length={suite.max_length}", f"--meteor={meteor}",
        f"--output_dir={test_dir}", "--show=0",
        *(f"--set={o}" for o in experiment.evaluate_set),
        *(f"--{name}={value}" for name, value in search_flags(
            suite, experiment).items())],
       log_name)


def search_flags(suite, experiment):
  """The experiment's test search as im2txt-evaluate flags {name: value}:
  its decoding, with the suite's beam size where it searches by beam."""
  flags_of = dict(experiment.decoding)
  if flags_of.get("method", "beam") == "beam":
    flags_of.setdefault("beam_size", suite.beam_size)
  return flags_of


def main(argv):
  del argv
  suite = Suite.load(FLAGS.suite)
  suite.encoder = FLAGS.encoder or suite.encoder
  suite.encoder_weights = FLAGS.encoder_weights or suite.encoder_weights
  order = [e.name for e in suite.experiments]
  if FLAGS.only:
    unknown = set(FLAGS.only) - {e.name for e in suite.experiments}
    if unknown:
      raise InputError(f"no experiments named {sorted(unknown)}", FLAGS.suite)
    suite.experiments = [e for e in suite.experiments if e.name in FLAGS.only]
  try:
    seeds = [int(s) for s in FLAGS.seeds] if FLAGS.seeds else None
  except ValueError:
    raise InputError(f"--seeds must be integers, got {FLAGS.seeds}") from None
  output = FLAGS.output or os.path.join("results", suite.name)
  if FLAGS.status:
    from experiments import status
    print("\n".join(status.report(suite, output, seeds)))
    return
  # Without --only and --seeds: each row's command names its own.
  options = {"suite": FLAGS.suite, "data": FLAGS.data, "output": FLAGS.output,
             "encoder": FLAGS.encoder, "encoder_weights": FLAGS.encoder_weights}
  command = "python -m experiments.compare " + " ".join(
      f"--{name}={value}" for name, value in options.items() if value)
  meteor = FLAGS.meteor and "METEOR" in suite.metrics
  for number in (signal.SIGTERM, signal.SIGINT):
    signal.signal(number, CHILDREN.stop)
  print(compare(suite, FLAGS.data, output, seeds, meteor, command, order,
                FLAGS.jobs))


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
