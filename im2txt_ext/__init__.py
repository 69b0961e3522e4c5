"""im2txt_ext: image captioning with TensorFlow and Keras.

Reproduces Show and Tell (Vinyals et al., 2015) and Show, Attend and Tell
(Xu et al., 2015). The core package holds the data layer, image encoders, the
no-attention decoders, the one training loop, the one caption search and
export; ``attention`` and ``embeddings`` build on it.

``im2txt_ext.caption(images, model=...)`` captions images in one call
(``im2txt_ext.api``).
"""

__version__ = "0.1.0"


def __getattr__(name):
  """``im2txt_ext.caption`` (``api.caption``), imported on first use: the
  package itself imports no TensorFlow."""
  if name == "caption":
    from im2txt_ext.api import caption
    return caption
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
