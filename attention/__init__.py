"""Decoders that attend over the image's spatial map: Show, Attend and Tell
(Xu et al. 2015; soft and hard attention) and a Transformer.

  scoring.py          attention layers: (hidden, features) -> (context,
                      weights);
  soft_attention.py   SoftAttentionDecoder, the deterministic variant;
  hard_attention.py   HardAttentionDecoder, the stochastic variant (REINFORCE);
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
