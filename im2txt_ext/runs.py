"""A run directory: config, vocabulary, checkpoints; and models built from it.

Layout of a run directory:
  config.json         the ExperimentConfig (reproduces the run);
  vocab.txt           the Vocabulary;
  checkpoints/        the last N training checkpoints (model, optimiser,
                      step, data-iterator position);
  best/               the checkpoint with the best validation BLEU-4
                      (CIDEr-D for SCST runs);
  train/, val/        TensorBoard event files.
"""

import os

import tensorflow as tf

from im2txt_ext import models, search
from im2txt_ext.config import ExperimentConfig, apply_overrides
from im2txt_ext.data import pipeline, vectors
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.encoders import encoder_side, encoder_spec
from im2txt_ext.errors import InputError

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
_MISMATCH = ("checkpoint does not match the model of config.json and "
             "vocab.txt")


def embedding_source_matrix(config, vocab):
  """The initial word-embedding matrix [V, E] named by the config, or None
  (``data.vectors``)."""
  source = config.model.embeddings_init
  if not source:
    return None
  matrix, report = vectors.embedding_matrix(
      vocab, source, config.model.embedding_size, seed=config.train.seed)
  print(f"word embedding from {source}: {report}")
  return matrix


def build_decoder(config, vocab_size, with_encoder):
  """The decoder named by ``config.model``, with its encoder if asked for."""
  encoder = build_encoder_of(config) if with_encoder else None
  try:
    models.decoder_class(config.model.decoder)
  except (ValueError, ImportError) as e:
    raise InputError(str(e)) from None
  try:
    decoder = models.build_decoder(
        config.model.decoder, vocab_size,
        embedding_size=config.model.embedding_size,
        hidden_size=config.model.hidden_size, dropout=config.model.dropout,
        cell=config.model.cell, encoder=encoder,
        freeze_embeddings=config.model.freeze_embeddings,
        tied_embeddings=config.model.tied_embeddings,
        **config.model.decoder_options)
  except (ValueError, TypeError) as e:  # A bad option of the decoder.
    first = (str(e).splitlines() or ["bad option"])[0][:300]
    raise InputError(f"model {config.model.decoder!r}: {first}") from None
  # Training feeds <start> and up to max_caption_length words.
  longest = search.longest_caption(decoder)
  if config.data.max_caption_length + 1 > longest:
    raise InputError(
        f"model {config.model.decoder!r} steps at most {longest} words "
        f"(max_positions), fewer than data.max_caption_length + 1 = "
        f"{config.data.max_caption_length + 1}")
  return decoder


def build_encoder_of(config):
  """The image encoder named by ``config.model``."""
  from im2txt_ext.encoders.backbones import build_encoder
  return build_encoder(config.model.encoder,
                       weights=config.model.encoder_weights or None,
                       image_size=config.data.image_size or None,
                       trainable=config.train.train_encoder_after == 0)


def build_from_batch(decoder, batch):
  """Creates the decoder's weights by running it once on a batch."""
  decoder({k: v for k, v in batch.items() if k != "image_id"}, training=False)


def image_size(config):
  """The side S of the images a run of ``config`` trains on, in pixels."""
  return encoder_side(config.model.encoder, config.data.image_size)


def feature_shape(config):
  """Shape of one image's features: (D,) or (L, D), from the encoder spec."""
  spec = encoder_spec(config.model.encoder)
  grid = spec.grid_at(image_size(config))
  kind = models.decoder_class(config.model.decoder).feature_kind
  return (spec.dim,) if kind == "pooled" else (grid * grid, spec.dim)


def cached_features(config):
  """The FeatureLookup of the cached features named by ``data.features``
  (checked against the shape the config's encoder and decoder need), or
  None."""
  if not config.data.features:
    return None
  from im2txt_ext.encoders.features import load_features
  image_ids, array = load_features(config.data.features)
  expected = feature_shape(config)
  if tuple(array.shape[1:]) != expected:
    raise InputError(f"cached features have shape {tuple(array.shape[1:])} "
                     f"per image but {config.model.decoder} with "
                     f"{config.model.encoder} needs {expected}",
                     config.data.features)
  return pipeline.FeatureLookup(image_ids, array)


def load_run(run_dir, overrides=()):
  """(ExperimentConfig with ``overrides``, Vocabulary) of a run directory;
  InputError where it is none."""
  config_path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.isdir(run_dir):
    raise InputError("run directory not found", run_dir)
  if not os.path.isfile(config_path):
    raise InputError(f"not a run directory (no {CONFIG_FILE})", run_dir)
  return (apply_overrides(ExperimentConfig.load(config_path), overrides),
          Vocabulary.load(os.path.join(run_dir, VOCAB_FILE)))


class TrainedModel:
  """A decoder restored from a run directory, ready to caption.

  Attributes:
    run_dir: str. config: ExperimentConfig. vocab: Vocabulary. decoder:
    CaptionDecoder (with its encoder when ``with_encoder``). step: int, the
    training step of the restored checkpoint.

  ``overrides`` ("a.b=value" strings) change the saved config before the
  model is built, for what only inference reads (e.g.
  ``model.decoder_options.inference=expectation`` for hard attention); a
  change of the weights' shapes fails the checkpoint restore.
  """

  def __init__(self, run_dir, which="best", with_encoder=True, overrides=()):
    self.config, self.vocab = load_run(run_dir, overrides)
    self.run_dir = run_dir
    if with_encoder and self.config.data.features:
      self.decoder, self.step = restore_with_encoder(
          self.config, len(self.vocab), run_dir, which)
      return
    self.decoder = build_decoder(self.config, len(self.vocab), with_encoder)
    dummy = {"input_ids": tf.zeros([1, 2], tf.int32)}
    if with_encoder:
      size = image_size(self.config)
      dummy["image"] = tf.zeros([1, size, size, 3])
    else:
      dummy["features"] = tf.zeros((1,) + feature_shape(self.config))
    build_from_batch(self.decoder, dummy)
    self.step = restore_weights(self.decoder, run_dir, which)


def check_ensemble(run_dirs, overrides=()):
  """InputError naming the first of ``run_dirs`` that cannot join the
  others in an ensemble (``models.ensemble``), before any model is built:
  each must have trained on cached features (its CNN the frozen, shared
  one) of the same encoder, side and kind, over the same vocabulary."""
  def reads(config):
    return (f"{models.decoder_class(config.model.decoder).feature_kind} "
            f"features of {config.model.encoder} "
            f"({config.model.encoder_weights}) at {image_size(config)} px")
  first = None
  for run_dir in run_dirs:
    config, vocab = load_run(run_dir, overrides)
    if not config.data.features:
      raise InputError("trained from images, so its CNN is its own: an "
                       "ensemble's members share one frozen CNN (runs "
                       "trained on cached features)", run_dir)
    first = first or (run_dir, reads(config), vocab.words)
    if reads(config) != first[1]:
      raise InputError(f"reads {reads(config)}, but {first[0]} reads "
                       f"{first[1]}: an ensemble's members read the same "
                       "features", run_dir)
    if vocab.words != first[2]:
      raise InputError(f"its vocabulary is not that of {first[0]}: an "
                       "ensemble's members share one (the same training "
                       "captions and word counts)", run_dir)


def trained_on_features(run_dir):
  """Whether the run in ``run_dir`` trained on cached features."""
  return bool(ExperimentConfig.load(os.path.join(
      run_dir, CONFIG_FILE)).data.features)


def restore_with_encoder(config, vocab_size, run_dir, which="best"):
  """``config``'s decoder with the weights of ``run_dir``, a run trained on
  cached features (its checkpoints hold no encoder), then given the
  (pretrained) encoder of ``config``, which must be the one those features
  came from: to caption images, or to fine-tune the CNN under the decoder.
  Returns (decoder, the checkpoint's step)."""
  source = ExperimentConfig.load(os.path.join(run_dir, CONFIG_FILE))
  def encoder_of(c):
    return c.model.encoder, c.model.encoder_weights, image_size(c)
  if encoder_of(source) != encoder_of(config):
    raise InputError(f"the run trained on features of encoder, weights and "
                     f"image size {encoder_of(source)}, not "
                     f"{encoder_of(config)}", run_dir)
  decoder = build_decoder(config, vocab_size, with_encoder=False)
  build_from_batch(decoder, {
      "input_ids": tf.zeros([1, 2], tf.int32),
      "features": tf.zeros((1,) + feature_shape(config))})
  step = restore_weights(decoder, run_dir, which)
  decoder.attach_encoder(build_encoder_of(config))
  return decoder, step


def count_saved_model_weights(path):
  """Variables saved under the checkpoint's ``model`` object, counted in its
  object graph (a variable is saved once, under whichever path reached it
  first, so names alone do not tell)."""
  from tensorflow.core.protobuf import trackable_object_graph_pb2
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(tf.train.load_checkpoint(path).get_tensor(
      "_CHECKPOINTABLE_OBJECT_GRAPH"))
  nodes = graph.nodes
  root = next((c.node_id for c in nodes[0].children if c.local_name ==
               "model"), None)
  seen, stack, count = set(), [] if root is None else [root], 0
  while stack:
    node_id = stack.pop()
    if node_id in seen:
      continue
    seen.add(node_id)
    node = nodes[node_id]
    count += any(a.name == "VARIABLE_VALUE" for a in node.attributes)
    stack.extend(c.node_id for c in node.children)
  return count


def restore_weights(decoder, run_dir, which="best"):
  """Loads the best (or "latest") checkpoint's weights; returns its step."""
  folders = [BEST_DIR, CHECKPOINTS_DIR] if which == "best" else \
      [CHECKPOINTS_DIR]
  for folder in folders:
    path = tf.train.latest_checkpoint(os.path.join(run_dir, folder))
    if path:
      break
  else:
    raise InputError("no checkpoint found", run_dir)
  # A weight the checkpoint lacks means another model (or a layer that
  # TensorFlow's tracking missed); restore() alone does not notice it.
  saved = count_saved_model_weights(path)
  if saved != len(decoder.weights):
    raise InputError(f"{_MISMATCH} (it holds {saved} weights, the model has "
                     f"{len(decoder.weights)})", path)
  step = tf.Variable(0, dtype=tf.int64)
  checkpoint = tf.train.Checkpoint(model=decoder, step=step)
  try:
    checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
  except (AssertionError, ValueError) as e:
    first = (str(e).splitlines() or ["mismatch"])[0][:300]
    raise InputError(f"{_MISMATCH} ({first})", path) from None
  return int(step.numpy())
