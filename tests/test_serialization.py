"""Keras serialisation: every decoder's config and .keras round trip, an
encoder's, the custom layers' configs, and a trained run saved by
im2txt-export --format=keras captioning in a fresh Python as the library
does."""

import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from test_export import image_paths, run_module, train_tiny
from im2txt_ext import keras_format, runs, search
from im2txt_ext.encoders import backbones
from im2txt_ext.encoders.backbones import build_encoder
from im2txt_ext.errors import InputError
from im2txt_ext.models import DECODERS, build_decoder, decoder_class
from im2txt_ext.models.decoder import CaptionDecoder

V, E, H, B, T, L, D = 20, 8, 16, 3, 5, 6, 16
# Options off their defaults, so that the round trip shows they are kept.
OPTIONS = {
    "rnn_baseline": {"cell": "gru"},
    "show_and_tell": {"image_dropout": 0.2, "freeze_embeddings": True},
    "soft_attention": {"score": "dot", "gating": False,
                       "doubly_stochastic": 0.5, "tied_embeddings": True},
    "hard_attention": {"inference": "argmax", "entropy_weight": 0.1},
    "transformer": {"num_heads": 4, "num_layers": 1, "pooled_token": True,
                    "positions": "sinusoidal", "max_positions": 12,
                    "tied_embeddings": True},
}


def constructor_arguments(cls):
  """The names of the arguments of a decoder class's and its decoder
  bases' constructors."""
  return {name for base in cls.__mro__ if issubclass(base, CaptionDecoder)
          for name, parameter in
          inspect.signature(base.__init__).parameters.items()
          if parameter.kind != parameter.VAR_KEYWORD} - {"self"}


def tiny_decoder(name):
  """(decoder, features, input_ids): a built decoder of that name with
  random weights (non-zero everywhere), and random inputs for it."""
  cls = decoder_class(name)
  decoder = build_decoder(name, V, embedding_size=E, hidden_size=H,
                          dropout=0.1, **OPTIONS[name])
  rng = np.random.default_rng(0)
  shape = (B, D) if cls.feature_kind == "pooled" else (B, L, D)
  features = tf.constant(rng.normal(size=shape), tf.float32)
  input_ids = tf.constant(rng.integers(3, V, (B, T)), tf.int32)
  runs.build_from_batch(decoder, {"features": features,
                                  "input_ids": input_ids})
  for weight in decoder.weights:
    weight.assign(rng.normal(size=weight.shape) * 0.5)
  return decoder, features, input_ids


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoder_config_and_keras_file_round_trip(name, tmp_path):
  decoder, features, input_ids = tiny_decoder(name)
  # The registry says without importing it which features it reads.
  assert DECODERS[name].feature_kind == type(decoder).feature_kind
  config = decoder.get_config()
  assert constructor_arguments(type(decoder)) <= set(config)
  assert {key: config[key] for key in OPTIONS[name]} == OPTIONS[name]
  assert type(decoder).from_config(config).get_config() == config

  path = str(tmp_path / "decoder.keras")
  keras.saving.save_model(decoder, path)
  loaded = keras.saving.load_model(path)
  assert type(loaded) is type(decoder)
  assert loaded.get_config() == config
  assert [w.path for w in loaded.weights] == [w.path for w in decoder.weights]
  for restored, saved in zip(loaded.weights, decoder.weights):
    np.testing.assert_array_equal(restored.numpy(), saved.numpy())
  np.testing.assert_allclose(loaded.teacher_forced(features, input_ids)[0],
                             decoder.teacher_forced(features, input_ids)[0],
                             atol=1e-6)
  expected = search.greedy(decoder, features, max_length=8)
  np.testing.assert_array_equal(
      search.greedy(loaded, features, max_length=8).ids, expected.ids)


def test_encoder_keras_file_round_trip(tmp_path):
  encoder = build_encoder("efficientnet_lite0", image_size=32)
  path = str(tmp_path / "encoder.keras")
  keras.saving.save_model(encoder, path)
  loaded = keras.saving.load_model(path)
  assert not loaded.trainable
  images = tf.random.uniform([2, 32, 32, 3], 0, 255, seed=1)
  for kind, features in encoder(images).items():
    np.testing.assert_array_equal(loaded(images)[kind], features)


def test_custom_layers_serialise():
  from attention.cached_attention import CachedMultiHeadAttention
  from attention.hard_attention import HardAttention
  from attention.soft_attention import SoftAttention
  from attention.transformer import DecoderBlock, LocationEmbedding
  from im2txt_ext.models.tied_logits import TiedLogits
  layers = [SoftAttention(4, name="additive"), SoftAttention(4, score="dot"),
            HardAttention(4, inference="argmax", entropy_weight=0.1),
            CachedMultiHeadAttention(2, 4, dropout=0.1),
            DecoderBlock(8, 2, 16, 0.1, 0.2, "relu"), LocationEmbedding(),
            TiedLogits(keras.layers.Embedding(V, E)),
            backbones.ImagePreprocessing(1.0, (-104.0, -117.0, -124.0),
                                         bgr=True),
            backbones.CoordinateChannels()]
  for layer in layers:
    config = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(layer)
    assert keras.saving.serialize_keras_object(restored) == config


# In a fresh Python: load the .keras file, caption images greedily.
LOAD_AND_CAPTION = """
import json, sys
import tensorflow as tf
from im2txt_ext import decoding, keras_format, search
from im2txt_ext.data import pipeline
from im2txt_ext.data.vocabulary import Vocabulary
decoder = keras_format.load_keras(sys.argv[1])
vocab = Vocabulary.load(sys.argv[2])
size = decoder.encoder.input_shape[1]
images = tf.stack([pipeline.decode_image(tf.io.read_file(path), size)
                   for path in sys.argv[3:]])
result = search.greedy(
    decoder, decoder.encode({"image": images}),
    tokens=vocab.special_tokens(),
    no_repeat_ngram_size=decoding.DEFAULTS["no_repeat_ngram_size"])
print(json.dumps({
    "captions": [" ".join(vocab.decode(ids)) for ids in
                 result.ids[:, 0].numpy()],
    "log_probs": result.log_probs[:, 0].numpy().tolist()}))
"""


def test_exported_keras_file_captions_like_the_captioner(scene_data,
                                                         tmp_path):
  from im2txt_ext.inference import Captioner
  run_dir = str(train_tiny(scene_data, tmp_path / "run"))
  with pytest.raises(InputError, match="ends in .keras"):
    keras_format.save_keras(run_dir, str(tmp_path / "model.h5"))
  path = tmp_path / "out" / "model.keras"
  result = run_module("im2txt_ext.cli.export", f"--run_dir={run_dir}",
                      f"--output={path}", "--format=keras")
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(path.parent)) == ["model.keras"]

  paths = image_paths(scene_data)
  vocab = os.path.join(run_dir, runs.VOCAB_FILE)
  loaded = subprocess.run(
      [sys.executable, "-c", LOAD_AND_CAPTION, str(path), vocab, *paths],
      capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
      env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2"))
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  captioned = json.loads(loaded.stdout.strip().splitlines()[-1])

  expected = Captioner(run_dir).caption_files(paths, method="greedy")
  assert captioned["captions"] == [e["caption"] for e in expected]
  np.testing.assert_allclose(captioned["log_probs"],
                             [e["log_prob"] for e in expected], atol=1e-5)
