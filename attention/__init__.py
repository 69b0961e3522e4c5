"""Decoders that attend over the image's spatial map: Show, Attend and Tell
(Xu et al. 2015; soft and hard attention) and a Transformer.

  soft_attention.py   SoftAttention, a layer: (query, features, state) ->
                      (context, weights, extras); the expected context, and
                      its doubly stochastic penalty (a loss term);
  hard_attention.py   HardAttention, the same call with a sampled location,
                      and its REINFORCE loss term (with the baseline hook);
  show_attend_tell.py ShowAttendTell, the LSTM decoder over either layer
                      ("soft_attention", "hard_attention");
  cached_attention.py multi-head attention that also steps with a cache;
  transformer.py      TransformerDecoder (Vaswani et al. 2017), pre-LN;
  visualize.py        the paper's figure: one attention map per word.

The decoders are reached by name through ``im2txt_ext.models.DECODERS``
("soft_attention", "hard_attention", "transformer"); the core never imports
this package.

Note: PyPI has an unrelated distribution named ``attention``. This package is
installed from this repository; do not ``pip install attention`` beside it,
as both provide the top-level module ``attention``.
"""
