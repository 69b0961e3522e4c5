"""Decoders by name. Variants outside the core are named by import path, so
the core never imports them: ``attention`` builds on ``im2txt_ext``."""

import importlib

DECODERS = {
    "rnn_baseline": "im2txt_ext.models.rnn_baseline:RNNBaseline",
    "show_and_tell": "im2txt_ext.models.show_and_tell:ShowAndTell",
    "soft_attention": "attention.soft_attention:SoftAttentionDecoder",
    "hard_attention": "attention.hard_attention:HardAttentionDecoder",
    "transformer": "attention.transformer:TransformerDecoder",
}


def decoder_class(name):
  if name not in DECODERS:
    raise ValueError(f"unknown decoder {name!r}; choose one of "
                     f"{sorted(DECODERS)}")
  module, cls = DECODERS[name].split(":")
  return getattr(importlib.import_module(module), cls)
