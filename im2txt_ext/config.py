"""Experiment configuration as data: one dataclass tree per experiment.

A run directory holds ``config.json`` written from these classes, so a run is
reproducible from its directory alone. Experiments in ``experiments/configs/``
are JSON files that override the defaults below; ``--set a.b=value`` flags
override single fields.
"""

import dataclasses
import json
import os
import typing

from im2txt_ext.errors import InputError


@dataclasses.dataclass
class DataConfig:
  train_captions: str = ""  # Caption file of the training split (any format).
  val_captions: str = ""  # Caption file of the validation split; "" = take
  #                         the "val" split of train_captions.
  images_dir: str = ""  # Folder of the images named in the caption files.
  features: str = ""  # Cached feature file (from im2txt-extract-features);
  #                     "" = read images and run the encoder in the model.
  train_split: str = "train"  # Records of this split train, where the file
  #                             marks splits; "" = all records.
  val_split: str = "val"  # Records of this split validate, likewise.
  min_word_count: int = 1  # Rarer training words map to <unk>.
  max_caption_length: int = 30  # Words kept per training caption.
  image_size: int = 0  # Encoder input side in px; 0 = the encoder's default.
  augment: bool = False  # Random crop and photometric jitter in training.
  shuffle_buffer: int = 4096  # Examples in the shuffle buffer.
  skip_bad_inputs: bool = False  # Skip (and count) bad captions and images
  #                                instead of stopping with an error.


@dataclasses.dataclass
class ModelConfig:
  decoder: str = "show_and_tell"  # A key of im2txt_ext.models.DECODERS.
  encoder: str = "scene_cnn"  # A backbone name of im2txt_ext.encoders.
  encoder_weights: str = ""  # "", "imagenet" or a weights-file path.
  cell: str = "lstm"  # Recurrent cell: "lstm", "gru" or "rnn" (vanilla tanh).
  embedding_size: int = 512  # Word and image embedding width (im2txt: 512).
  hidden_size: int = 512  # Recurrent state width (im2txt: 512).
  dropout: float = 0.3  # Drop rate on the cell's input and output (im2txt
  #                       kept 0.7 of the units, a rate of 0.3).
  embeddings_init: str = ""  # "" (random), a vectors file (GloVe/word2vec
  #                            text) or "glove6b50d".
  freeze_embeddings: bool = False  # Keep the word embedding fixed.
  tied_embeddings: bool = False  # Logits from the word embedding's
  #                                transpose (Press and Wolf 2017).
  decoder_options: dict = dataclasses.field(default_factory=dict)  # Extra
  #   keyword arguments of the chosen decoder class (see its docstring).


@dataclasses.dataclass
class TrainConfig:
  num_steps: int = 2000  # Training steps (batches) in all.
  batch_size: int = 64  # Captions per step, over all replicas.
  optimizer: str = "adam"  # "adam" or "sgd".
  learning_rate: float = 2e-3  # Initial learning rate.
  lr_schedule: str = "constant"  # "constant", "exponential" or "cosine".
  lr_decay_steps: int = 1000  # Steps per decay period (exponential).
  lr_decay_rate: float = 0.5  # Factor per period (exponential).
  clip_norm: float = 5.0  # Global gradient-norm clip (im2txt: 5.0); 0 = off.
  label_smoothing: float = 0.0  # Target smoothing in the cross-entropy.
  scheduled_sampling: float = 0.0  # Final probability of feeding the model's
  #                                  own sample instead of the true word.
  scheduled_sampling_ramp: int = 1000  # Steps over which it rises from 0.
  init_from: str = ""  # Run directory whose vocabulary and best checkpoint
  #                      start this run (e.g. cross-entropy weights for
  #                      SCST; or, trained on cached features, the decoder
  #                      of a run from images that fine-tunes the CNN);
  #                      "" = fresh initialisation.
  scst: bool = False  # Self-critical sequence training: policy gradient on
  #                     the CIDEr-D of sampled captions (training/scst.py).
  scst_samples: int = 5  # Captions sampled per image each SCST step.
  scst_baseline: str = "greedy"  # Reward baseline: "greedy" (the greedy
  #                                caption's CIDEr-D) or "mean" (the mean of
  #                                the image's other samples).
  scst_temperature: float = 1.0  # Softmax temperature of the SCST samples.
  scst_xent_weight: float = 0.0  # Weight of the cross-entropy added to the
  #                                SCST loss; 0 = policy gradient alone (no
  #                                teacher-forced pass over the references).
  train_encoder_after: int = -1  # Step from which the CNN is fine-tuned end to
  #                                end (im2txt's second phase); -1 = never,
  #                                0 = from the start.
  encoder_learning_rate_scale: float = 1.0  # The fine-tuned CNN's learning
  #                                rate as a fraction of the decoder's
  #                                (e.g. 0.1).
  encoder_batch_norm: str = "auto"  # The fine-tuned CNN's BatchNorm:
  #                                "frozen" (its moving statistics, inference
  #                                mode; scale and offset still train),
  #                                "batch" (batch statistics, moving ones
  #                                updated) or "auto" (frozen for pretrained
  #                                model.encoder_weights, batch for random).
  checkpoint_every: int = 200  # Steps between checkpoints.
  keep_checkpoints: int = 3  # Most recent checkpoints kept (plus the best).
  validate_every: int = 500  # Steps between validations (greedy captions
  #                            scored by BLEU-4 and CIDEr-D; best_by picks
  #                            the best checkpoint).
  validation_images: int = 200  # Validation images captioned each time.
  best_by: str = "auto"  # The validation score that picks the best
  #                        checkpoint: "BLEU-4", "CIDEr-D" or "auto" (CIDEr-D
  #                        for SCST, the reward it optimises; else BLEU-4).
  log_every: int = 50  # Steps between TensorBoard scalars.
  seed: int = 0  # Seed of initialisation, shuffling and sampling.
  strategy: str = "default"  # Devices (im2txt_ext.training.distribute):
  #                            "default" (one), "mirrored" (all local GPUs),
  #                            "multi_worker" (the machines of TF_CONFIG) or
  #                            "tpu"; batch_size is split over the replicas.
  precision: str = "float32"  # "float32", "mixed_float16" (GPU) or
  #                             "mixed_bfloat16" (CPU, TPU, recent GPUs):
  #                             16-bit math, float32 weights, logits and loss.
  jit_compile: bool = False  # Compile the training step with XLA.


@dataclasses.dataclass
class ExperimentConfig:
  name: str = "experiment"  # Short name, used in reports.
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

  def to_dict(self):
    return dataclasses.asdict(self)

  def save(self, path):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)
    os.replace(tmp, path)

  @classmethod
  def from_dict(cls, values, source="config"):
    return _build(cls, values, source)

  @classmethod
  def load(cls, path):
    return load_json(cls, path)


def read_json(path, what="config file"):
  """The values of JSON file ``path``; InputError naming it where it is
  missing (as ``what``) or malformed."""
  if not os.path.isfile(path):
    raise InputError(f"{what} not found", path)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise InputError(f"malformed JSON ({e.msg})", path, e.lineno) from None


def load_json(cls, path):
  """A dataclass ``cls`` from a JSON file of its fields (omitted fields keep
  their defaults; unknown or mistyped ones raise InputError)."""
  return _build(cls, read_json(path), path)


def _build(cls, values, source):
  if not isinstance(values, dict):
    raise InputError(f"expected an object for {cls.__name__}", source)
  hints = typing.get_type_hints(cls)
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(values) - fields
  if unknown:
    raise InputError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; "
                     f"known: {sorted(fields)}", source)
  kwargs = {}
  for name, value in values.items():
    kind = hints[name]
    item = (typing.get_args(kind) or [None])[0]
    if typing.get_origin(kind) is list and dataclasses.is_dataclass(item):
      if not isinstance(value, list):
        raise InputError(f"{cls.__name__}.{name} must be a list", source)
      value = [_build(item, v, source) for v in value]
    elif dataclasses.is_dataclass(kind):
      value = _build(kind, value, source)
    elif kind is float and isinstance(value, int):
      value = float(value)
    elif kind is tuple and isinstance(value, list):
      value = tuple(value)
    elif not isinstance(value, kind) or (kind is int and
                                         isinstance(value, bool)):
      raise InputError(f"{cls.__name__}.{name} must be {kind.__name__}, got "
                       f"{value!r}", source)
    kwargs[name] = value
  return cls(**kwargs)


def apply_overrides(config, overrides):
  """Applies ``section.field=value`` strings (the value parsed as JSON, else
  kept as a string)."""
  values = config.to_dict()
  for item in overrides:
    key, eq, raw = item.partition("=")
    if not eq:
      raise InputError(f"override {item!r} is not of the form a.b=value")
    try:
      value = json.loads(raw)
    except json.JSONDecodeError:
      value = raw
    target = values
    *parents, leaf = key.split(".")
    for part in parents:
      if not isinstance(target.get(part), dict):
        raise InputError(f"override {item!r}: no section {part!r}")
      target = target[part]
    if leaf not in target and not isinstance(target, dict):
      raise InputError(f"override {item!r}: no field {leaf!r}")
    target[leaf] = value
  return ExperimentConfig.from_dict(values, "--set")
