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
Softmax, embedding lookups and element-wise gates are left out (< 2%).
"""

import tensorflow as tf

from im2txt_ext.models.show_and_tell import ShowAndTell

BATCH, VOCAB, EMBED, HIDDEN, LENGTH, FEATURES = 64, 10000, 512, 512, 20, 2048
SIZES = {"vocab": VOCAB, "embedding": EMBED, "hidden": HIDDEN,
         "caption_length": LENGTH, "features": FEATURES}


def forward_flops_per_caption(length=LENGTH):
  lstm = 2 * 4 * HIDDEN * (EMBED + HIDDEN)
  output = 2 * HIDDEN * VOCAB
  return 2 * FEATURES * EMBED + lstm + length * (lstm + output)


def show_and_tell(batch=BATCH):
  """A Show and Tell decoder of the standard size, built, and its inputs."""
  tf.keras.utils.set_random_seed(0)
  decoder = ShowAndTell(VOCAB, embedding_size=EMBED, hidden_size=HIDDEN,
                        dropout=0.0)
  features = tf.random.normal([batch, FEATURES])
  ids = tf.random.uniform([batch, LENGTH], 3, VOCAB, tf.int32)
  decoder.teacher_forced(features, ids)
  return decoder, features, ids
