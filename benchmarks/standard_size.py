"""The standard benchmark model size and its arithmetic (FLOP) counts.

Standard size (issue 4): batch 64, vocabulary 10k, embedding and hidden 512,
caption length 20, pooled features D = 2048.

FLOPs counted are only the model's necessary multiply-adds (2 per MAC), per
caption of T words:
  LSTM step:      2 * 4H * (E + H)        (input and recurrent matmuls)
  output layer:   2 * H * V
  image feed:     2 * D * E + LSTM step   (once, Show and Tell's x_{-1})
  forward  = image feed + T * (LSTM step + output layer)
  training = 3 * forward                  (backward costs twice the forward)
Attention decoders (additive attention of width A = H, Xu et al.'s default
options: initial state from the mean feature, gating, deep output), per
caption, with L locations of D channels:
  once:           2 * D * 2H (initial h, c) + 2 * L * D * A (feature keys)
  per step:       2 * H * A (query) + 2 * L * A (scores) + 2 * L * D
                  (context) + 2 * H (gate) + 2 * 4H * (E + D + H) (LSTM)
                  + 2 * (H + D) * E (deep output) + 2 * E * V (logits)
The Transformer decoder (3 pre-LN blocks of width W = H, 8 heads,
feed-forward F = 4W; E = W, so no input projection), per caption:
  once:           2 * L * D * W (memory) + blocks * 2 * 2 * L * W * W
                  (cross-attention keys and values)
  per position:   blocks * (4 * 2 * W * W (self-attention q, k, v, out)
                  + 2 * 2 * W * W (cross q, out) + 2 * 2 * L * W (cross
                  scores and sum) + 2 * 2 * W * F (feed-forward))
                  + 2 * W * V (logits)
  self-attention scores and sums over the t + 1 positions seen:
                  blocks * sum_t 2 * 2 * W * (t + 1) = blocks * 2W T(T+1)
Softmax, layer norms, embedding lookups and element-wise gates are left out
(< 2%). A beam search computes the image's part ("once", the image feed)
once per image and the rest once per beam.
"""

import tensorflow as tf

from im2txt_ext.models import build_decoder

BATCH, VOCAB, EMBED, HIDDEN, LENGTH, FEATURES = 64, 10000, 512, 512, 20, 2048
SIZES = {"vocab": VOCAB, "embedding": EMBED, "hidden": HIDDEN,
         "caption_length": LENGTH}
# Feature maps of the attention benchmarks: VGG conv5 and InceptionV3.
FEATURE_MAPS = {"196x512": (196, 512), "64x2048": (64, 2048)}


def show_and_tell_flops(length=LENGTH):
  """(FLOPs once per image, FLOPs per caption after it): Show and Tell."""
  lstm = 2 * 4 * HIDDEN * (EMBED + HIDDEN)
  output = 2 * HIDDEN * VOCAB
  return 2 * FEATURES * EMBED + lstm, length * (lstm + output)


def attention_flops(locations, channels, length=LENGTH):
  """(once per image, per caption): soft or hard attention."""
  h, e, v, l, d = HIDDEN, EMBED, VOCAB, locations, channels
  once = 2 * d * 2 * h + 2 * l * d * h
  step = (2 * h * h + 2 * l * h + 2 * l * d + 2 * h + 2 * 4 * h * (e + d + h)
          + 2 * (h + d) * e + 2 * e * v)
  return once, length * step


TRANSFORMER_BLOCKS = 3  # The Transformer's defaults: 3 blocks, 8 heads.


def transformer_flops(locations, channels, length=LENGTH):
  """(once per image, per caption): the Transformer."""
  w, v, l, d = HIDDEN, VOCAB, locations, channels
  f, blocks = 4 * w, TRANSFORMER_BLOCKS
  once = 2 * l * d * w + blocks * 4 * l * w * w
  position = blocks * (8 * w * w + 4 * w * w + 4 * l * w + 4 * w * f) + \
      2 * w * v
  return once, length * position + blocks * 2 * w * length * (length + 1)


# The features each decoder is benchmarked on in search: pooled vectors
# for Show and Tell, the VGG map for the attending decoders.
SEARCH_FEATURES = {"show_and_tell": (FEATURES,),
                   "soft_attention": FEATURE_MAPS["196x512"],
                   "transformer": FEATURE_MAPS["196x512"]}


def forward_flops(name, feature_shape, length=LENGTH, beams=1):
  """The forward FLOPs per image of decoder ``name`` on features of
  ``feature_shape`` ((D,) or (L, D)), captioned by ``beams`` beams (in
  training, 1): the image's part once, the caption's part per beam."""
  if name == "show_and_tell":
    once, per_caption = show_and_tell_flops(length)
  else:
    count = transformer_flops if name == "transformer" else attention_flops
    once, per_caption = count(*feature_shape, length=length)
  return once + beams * per_caption


def decoder(name, feature_shape, batch=BATCH):
  """A decoder of the standard size, built, with random features and ids."""
  tf.keras.utils.set_random_seed(0)
  model = build_decoder(name, VOCAB, embedding_size=EMBED, hidden_size=HIDDEN,
                        dropout=0.0)
  features = tf.random.normal((batch,) + tuple(feature_shape))
  ids = tf.random.uniform([batch, LENGTH], 3, VOCAB, tf.int32)
  model.teacher_forced(features, ids)
  return model, features, ids


def show_and_tell(batch=BATCH):
  return decoder("show_and_tell", (FEATURES,), batch)
