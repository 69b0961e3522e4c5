"""A comparison suite as data: one dataset, one encoder, several experiments.

A suite file (``experiments/suites/*.json``) names the dataset's caption
files relative to a data directory given at run time (so the same suite
runs wherever the data lives), the frozen image encoder whose cached
features every experiment trains on, the experiments (each an experiment
config of ``experiments/configs/`` plus ``--set`` overrides), the seeds,
the search used for evaluation, and the retrieval baseline's settings.
Overrides that several experiments share (e.g. the SCST recipe) are
written once, as a named recipe that each of them names: the suite's own,
or one of a recipes file that several suites share (e.g. a dev suite and
the table's suite, so that what is tuned on dev is what the table runs).
"""

import dataclasses
import os
import re

from im2txt_ext import decoding
from im2txt_ext.config import load_json, read_json
from im2txt_ext.encoders.specs import encoder_side
from im2txt_ext.errors import InputError

RUN_PLACEHOLDER = re.compile(r"\{run:([^}]*)\}")  # See Experiment.set.
METRICS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "perplexity")
KNOWN_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L",
                 "CIDEr-D", "perplexity",  # What im2txt-evaluate reports,
                 "distinct")  # and the report's share of distinct captions.


def run_dir(output, name, seed):
  """Where a comparison keeps experiment ``name``'s run with ``seed``."""
  return os.path.join(output, "runs", f"{name}-seed{seed}")


def ensemble_dir(output, name):
  """Where a comparison keeps ensemble experiment ``name``'s evaluation."""
  return os.path.join(output, "runs", name)


@dataclasses.dataclass
class Experiment:
  name: str = ""  # Short name: the run directory and the report key.
  label: str = ""  # What the table calls it.
  config: str = ""  # Experiment config JSON (model and schedule).
  recipes: list = dataclasses.field(default_factory=list)  # Names of the
  #   suite's recipes whose overrides come first, in this order, before
  #   its own set (which thus overrides them); Suite.load expands them
  #   into set.
  set: list = dataclasses.field(default_factory=list)  # Extra overrides
  #   "a.b=value"; "{word2vec}" stands for the suite's word2vec vectors and
  #   "{run:NAME}" for the run of an earlier experiment NAME with the same
  #   seed (e.g. "train.init_from={run:show_and_tell}" to fine-tune it),
  #   which must have this experiment's image side.
  evaluate_set: list = dataclasses.field(default_factory=list)  # Overrides
  #   of the run's config for its test evaluation only (im2txt-evaluate
  #   --set), for what only inference reads; chosen on the dev split.
  decoding: dict = dataclasses.field(default_factory=dict)  # Its own
  #   search for the test evaluation (im2txt-evaluate flags: "method",
  #   beam or greedy, the beam size and that method's options, e.g.
  #   {"length_penalty": 0.7} or {"method": "greedy"}), chosen on the dev
  #   split; the others keep the suite's beam size and the defaults
  #   (im2txt_ext.decoding).
  seeds: list = dataclasses.field(default_factory=list)  # Its own seeds,
  #   e.g. three for a main row and one for a costly variant; empty: the
  #   suite's.
  image_size: int = 0  # Its own encoder input side (e.g. 448 for a 14x14
  #   map for attention, chosen on dev); 0: the suite's. Features at each
  #   side are extracted once.
  ensemble: str = ""  # Name of an earlier experiment: this row searches
  #   that experiment's runs, one per seed, as one model (im2txt_ext.models.
  #   ensemble) and trains nothing; its config, seeds, image side,
  #   evaluate_set and decoding are that experiment's.

  def run_dirs(self, output, seeds):
    """Where a comparison in ``output`` keeps the runs this row reads, one
    per seed of ``seeds``: its own, or for an ensemble its members'."""
    return [run_dir(output, self.ensemble or self.name, seed)
            for seed in seeds]

  def trains_on_images(self):
    """Whether its runs train, and are evaluated, on the images themselves
    (its set clears "data.features=", e.g. to fine-tune the CNN), so that
    it reads no cached features."""
    return "data.features=" in self.set

  def runs_needed(self):
    """Names of the experiments whose runs its "{run:NAME}" settings
    start from."""
    return [name for setting in self.set
            for name in RUN_PLACEHOLDER.findall(setting)]


def ensemble_of(experiment, earlier, path):
  """The ensemble ``experiment`` with the config, seeds, image side,
  evaluate_set and decoding of the experiment it names, one of
  ``earlier``; InputError (naming the suite file ``path``) where it names
  none or sets them."""
  members = {e.name: e for e in earlier if not e.ensemble}
  if experiment.ensemble not in members:
    raise InputError(f"experiment {experiment.name}: ensemble must name an "
                     "experiment listed before it that trains runs", path)
  own = [name for name in ("config", "recipes", "set", "seeds",
                           "image_size", "evaluate_set", "decoding")
         if getattr(experiment, name)]
  if own:
    raise InputError(f"experiment {experiment.name}: an ensemble takes "
                     f"{', '.join(own)} from {experiment.ensemble}", path)
  named = members[experiment.ensemble]
  return dataclasses.replace(
      experiment, config=named.config, seeds=list(named.seeds),
      image_size=named.image_size, evaluate_set=list(named.evaluate_set),
      decoding=dict(named.decoding))


def with_recipes(experiment, recipes, path):
  """``experiment`` with the overrides of the recipes it names (of the
  suite's ``recipes``, name -> list of "a.b=value") put before its own
  ``set``; InputError (naming the suite file ``path``) where it names an
  unknown one."""
  unknown = [name for name in experiment.recipes if name not in recipes]
  if unknown:
    raise InputError(f"experiment {experiment.name}: unknown recipe(s) "
                     f"{unknown}; the suite's: {sorted(recipes)}", path)
  return dataclasses.replace(experiment, recipes=[], set=[
      *(item for name in experiment.recipes for item in recipes[name]),
      *experiment.set])


def check_recipes(recipes, path):
  """InputError (naming the file ``path`` they are written in) unless
  ``recipes`` maps names to lists of overrides "a.b=value"."""
  if not isinstance(recipes, dict):
    raise InputError("recipes must be an object of name -> list of "
                     f"overrides, got {type(recipes).__name__}", path)
  for name, items in recipes.items():
    if not isinstance(items, list) or not all(
        isinstance(item, str) and "=" in item for item in items):
      raise InputError(f"recipe {name}: must be a list of overrides "
                       f"'a.b=value', got {items!r}", path)


def all_recipes(suite, path):
  """The recipes of ``suite`` (loaded from the suite file ``path``): its
  own and those of its ``recipes_file``; InputError naming the file where
  one is malformed or a name is in both."""
  check_recipes(suite.recipes, path)
  if not suite.recipes_file:
    return suite.recipes
  shared = read_json(suite.recipes_file, "recipes file")
  check_recipes(shared, suite.recipes_file)
  both = sorted(set(shared) & set(suite.recipes))
  if both:
    raise InputError(f"recipe(s) {both} both in the suite and in its "
                     f"recipes_file {suite.recipes_file}", path)
  return {**shared, **suite.recipes}


def check_decoding(experiment, path):
  """InputError (naming the suite file ``path``) unless
  ``experiment.decoding`` names the method beam or greedy (default beam)
  and each of the others is the beam size (a positive int, for beam
  search) or an option of that method with a value of its default's type,
  so a typo fails before any training, not at the test evaluation hours
  later."""
  method = experiment.decoding.get("method", "beam")
  if method not in ("beam", "greedy"):
    raise InputError(f"experiment {experiment.name}: decoding method must "
                     f"be beam or greedy, got {method!r}", path)
  try:
    decoding.check_options(method, experiment.decoding, (
        "method", *(("beam_size",) if method == "beam" else ())))
  except InputError as e:
    raise InputError(f"experiment {experiment.name}: decoding: {e}",
                     path) from None
  for name, value in experiment.decoding.items():
    if name == "method":
      continue
    default = decoding.DEFAULTS.get(name, 1)  # beam_size: an int.
    kind = (int, float) if type(default) is float else type(default)
    wanted = ("a positive int" if name == "beam_size"
              else f"of type {type(default).__name__}")
    if isinstance(value, bool) != isinstance(default, bool) or \
        not isinstance(value, kind) or (name == "beam_size" and value < 1):
      raise InputError(f"experiment {experiment.name}: decoding {name} "
                       f"must be {wanted}, got {value!r}", path)


@dataclasses.dataclass
class Published:
  """A published result shown beside the suite's own, never computed."""
  label: str = ""  # What the table calls it, with its source.
  metrics: dict = dataclasses.field(default_factory=dict)  # Metric name ->
  #   value on the 0..1 scale of im2txt-evaluate (BLEU-4 19.5 -> 0.195).


@dataclasses.dataclass
class Suite:
  name: str = "suite"  # Names the results folder.
  train_captions: str = ""  # Caption files, relative to the data directory;
  val_captions: str = ""  #   one file may serve several splits (below).
  test_captions: str = ""
  images_dir: str = "images"  # Image folder, relative to the data directory.
  train_split: str = "train"  # Records of these splits, where a file marks
  val_split: str = "val"  #     splits ("" = all records of the file).
  test_split: str = "test"
  encoder: str = "efficientnet_lite0"  # Frozen encoder of the cached features.
  encoder_weights: str = "imagenet"
  image_size: int = 0  # Encoder input side; 0 = the encoder's default.
  seeds: list = dataclasses.field(default_factory=lambda: [0])  # Every
  #   experiment is trained once per seed (unless it names its own); the
  #   table gives mean and spread.
  beam_size: int = 3  # Evaluation search on the test split.
  max_length: int = 20
  retrieval_neighbours: int = 10  # The retrieval baseline's k and its
  retrieval_consensus: str = "cider"  # consensus similarity.
  word2vec: list = dataclasses.field(default_factory=list)  # im2txt-word2vec
  #   flags for the vectors that "{word2vec}" names (trained on the
  #   training captions once).
  recipes: dict = dataclasses.field(default_factory=dict)  # Name -> list
  #   of overrides "a.b=value" that the experiments naming it share (e.g.
  #   {"scst": ["train.scst=true", ...]}), written once.
  recipes_file: str = ""  # A JSON file of more recipes (name -> list of
  #   overrides, as recipes; relative to the working directory) that
  #   several suites share; a name may not be in both.
  experiments: list[Experiment] = dataclasses.field(default_factory=list)
  metrics: list = dataclasses.field(default_factory=lambda: list(
      METRICS))  # The table's columns: names of KNOWN_METRICS.
  published: list[Published] = dataclasses.field(default_factory=list)
  #   Rows from the literature, appended to the table for comparison.
  curves: list = dataclasses.field(default_factory=list)  # Experiments
  #   drawn in curves.png, by name; empty: all.
  report_images: int = 50  # Test images in the HTML report.
  attention_images: int = 3  # Test images with attention figures.
  results_file: str = ""  # The table as JSON (e.g. docs/results/NAME.json,
  #   relative to the working directory); each run of the driver updates
  #   the rows of its experiments and keeps the others.
  show_captions: int = 0  # Test images whose captions (each model's, the
  #   retrieval baseline's, a reference) the driver prints after the table.

  @classmethod
  def load(cls, path):
    suite = load_json(cls, path)
    if not suite.experiments:
      raise InputError("the suite lists no experiments", path)
    names = [e.name for e in suite.experiments]
    if len(set(names)) != len(names) or not all(names):
      raise InputError(f"experiment names must be unique and non-empty, got "
                       f"{names}", path)
    unknown = [m for m in suite.metrics + [
        m for row in suite.published for m in row.metrics]
               if m not in KNOWN_METRICS]
    if unknown:
      raise InputError(f"unknown metric(s) {sorted(set(unknown))}; known: "
                       f"{list(KNOWN_METRICS)}", path)
    if set(suite.curves) - set(names):
      raise InputError(f"curves names unknown experiments "
                       f"{sorted(set(suite.curves) - set(names))}", path)
    recipes = all_recipes(suite, path)
    for i, experiment in enumerate(suite.experiments):
      if experiment.ensemble:
        suite.experiments[i] = ensemble_of(experiment, suite.experiments[:i],
                                           path)
      else:
        suite.experiments[i] = with_recipes(experiment, recipes, path)
    seeds = suite.experiment_seeds()
    sides = {e.name: encoder_side(suite.encoder, suite.image_size_of(e))
             for e in suite.experiments}
    for i, experiment in enumerate(suite.experiments):
      for name in experiment.runs_needed():
        if name not in names[:i]:
          raise InputError(f"experiment {experiment.name}: {{run:{name}}} "
                           "must name an experiment listed before it", path)
        if sides[experiment.name] != sides[name]:
          raise InputError(
              f"experiment {experiment.name}: image side "
              f"{sides[experiment.name]} px, not that of {name} "
              f"({sides[name]} px), whose runs it starts from", path)
        if set(seeds[experiment.name]) - set(seeds[name]):
          raise InputError(
              f"experiment {experiment.name}: seeds {seeds[experiment.name]}"
              f" not all among those of {name}, whose runs it starts from "
              f"({seeds[name]})", path)
      check_decoding(experiment, path)
      if experiment.image_size < 0:
        raise InputError(f"experiment {experiment.name}: image_size must "
                         "be 0 (the suite's) or a side in pixels", path)
      if not os.path.isfile(experiment.config):
        raise InputError(f"experiment {experiment.name}: config not found",
                         experiment.config)
    return suite

  def trained(self):
    """The experiments that train runs (all but the ensembles)."""
    return [e for e in self.experiments if not e.ensemble]

  def image_size_of(self, experiment):
    """The image side ``experiment`` is run at: its own, else the suite's
    (0: the encoder's default)."""
    return experiment.image_size or self.image_size

  def experiment_seeds(self, override=None):
    """{experiment name: its seeds}: ``override`` for all where given, else
    each experiment's own, else the suite's."""
    return {e.name: list(override or e.seeds or self.seeds)
            for e in self.experiments}

  def reported_seeds(self, output, ran):
    """{experiment name: the seeds its row reports}: ``ran`` (those just
    run) and every other of its own seeds whose run in ``output`` is
    evaluated on test, so that running some seeds (``--seeds``) adds them
    to a row rather than replacing it; an ensemble's: ``ran``, the members
    it was evaluated with."""
    own = self.experiment_seeds()
    return {e.name: list(ran[e.name]) if e.ensemble else sorted(
        set(ran[e.name]) | {seed for seed in own[e.name] if os.path.exists(
            os.path.join(run_dir(output, e.name, seed), "test",
                         "metrics.json"))})
            for e in self.experiments}

  def paths(self, data_dir):
    """Absolute-ish paths of the data files; a missing one raises InputError
    naming it."""
    if not os.path.isdir(data_dir):
      raise InputError("data directory not found", data_dir)
    out = {}
    for key in ("train_captions", "val_captions", "test_captions",
                "images_dir"):
      path = os.path.join(data_dir, getattr(self, key))
      if not os.path.exists(path):
        raise InputError(f"{key} of suite {self.name!r} not found", path)
      out[key] = path
    return out
