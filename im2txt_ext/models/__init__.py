"""Decoders by name. Variants outside the core are named by import path, so
the core never imports them: ``attention`` builds on ``im2txt_ext``.

Each name is a class, the options it presets ("soft_attention" and
"hard_attention" are one decoder with either attention layer), to which a
config's ``decoder_options`` add, and the features it reads, the class's
``feature_kind``, here too so that planning a comparison (which features
to extract, ``--status``) imports no TensorFlow.
"""

import importlib
from typing import NamedTuple


class Registered(NamedTuple):
  path: str  # "module:Class".
  presets: dict  # Keyword arguments the name gives the class.
  feature_kind: str  # "pooled" [B, D] or "spatial" [B, L, D].


DECODERS = {
    "rnn_baseline": Registered(
        "im2txt_ext.models.rnn_baseline:RNNBaseline", {}, "pooled"),
    "show_and_tell": Registered(
        "im2txt_ext.models.show_and_tell:ShowAndTell", {}, "pooled"),
    "soft_attention": Registered(
        "attention.show_attend_tell:ShowAttendTell", {"attention": "soft"},
        "spatial"),
    "hard_attention": Registered(
        "attention.show_attend_tell:ShowAttendTell", {"attention": "hard"},
        "spatial"),
    "transformer": Registered(
        "attention.transformer:TransformerDecoder", {}, "spatial"),
}


def registered(name):
  """The DECODERS entry of ``name``; ValueError where there is none."""
  if name not in DECODERS:
    raise ValueError(f"unknown decoder {name!r}; choose one of "
                     f"{sorted(DECODERS)}")
  return DECODERS[name]


def decoder_class(name):
  module, cls = registered(name).path.split(":")
  return getattr(importlib.import_module(module), cls)


def build_decoder(name, vocab_size, **options):
  """The decoder called ``name``, with its presets and ``options``."""
  return decoder_class(name)(vocab_size,
                             **{**registered(name).presets, **options})
