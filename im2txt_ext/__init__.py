"""im2txt_ext: image captioning with TensorFlow and Keras.

Reproduces Show and Tell (Vinyals et al., 2015) and Show, Attend and Tell
(Xu et al., 2015). The core package holds the data layer, image encoders, the
no-attention decoders, the one training loop, the one caption search and
export; ``attention`` and ``embeddings`` build on it.
"""

__version__ = "0.1.0"
