"""Decoders by name. Variants outside the core are named by import path, so
the core never imports them: ``attention`` builds on ``im2txt_ext``.

Each name is a class and the options it presets ("soft_attention" and
"hard_attention" are one decoder with either attention layer); a config's
``decoder_options`` add to them.
"""

import importlib

DECODERS = {
    "rnn_baseline": ("im2txt_ext.models.rnn_baseline:RNNBaseline", {}),
    "show_and_tell": ("im2txt_ext.models.show_and_tell:ShowAndTell", {}),
    "soft_attention": ("attention.show_attend_tell:ShowAttendTell",
                       {"attention": "soft"}),
    "hard_attention": ("attention.show_attend_tell:ShowAttendTell",
                       {"attention": "hard"}),
    "transformer": ("attention.transformer:TransformerDecoder", {}),
}


def decoder_class(name):
  if name not in DECODERS:
    raise ValueError(f"unknown decoder {name!r}; choose one of "
                     f"{sorted(DECODERS)}")
  module, cls = DECODERS[name][0].split(":")
  return getattr(importlib.import_module(module), cls)


def build_decoder(name, vocab_size, **options):
  """The decoder called ``name``, with its presets and ``options``."""
  return decoder_class(name)(vocab_size, **{**DECODERS[name][1], **options})
