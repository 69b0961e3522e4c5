"""The output layer tied to the word embedding (Press and Wolf 2017; Inan et
al. 2017): logits from the embedding's transpose.

Shape letters: H the output layer's input width, E embedding size, V
vocabulary.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="im2txt_ext")
class TiedLogits(keras.layers.Layer):
  """logits = (h P) W_e^T + b: h [..., H] -> [..., V].

  W_e [V, E] is the word embedding's matrix, shared (freezing the embedding
  freezes it here too); P [H, E] is a projection made only where H != E;
  b [V] a bias of its own.

  Args:
    embedding: keras.layers.Embedding. The word embedding to share.
  """

  def __init__(self, embedding, **kwargs):
    super().__init__(**kwargs)
    self.embedding = embedding
    self.projection = None

  def get_config(self):
    config = super().get_config()
    config.update(
        embedding=keras.saving.serialize_keras_object(self.embedding))
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    embedding = keras.saving.deserialize_keras_object(config.pop("embedding"))
    return cls(embedding, **config)

  def build(self, input_shape):
    if input_shape[-1] != self.embedding.output_dim:
      self.projection = keras.layers.Dense(
          self.embedding.output_dim, use_bias=False, name="projection")
      self.projection.build(input_shape)
    self.bias = self.add_weight(shape=(self.embedding.input_dim,),
                                initializer="zeros", name="bias")

  def call(self, hidden):
    if self.projection is not None:
      hidden = self.projection(hidden)
    matrix = tf.cast(self.embedding.embeddings, hidden.dtype)
    return tf.matmul(hidden, matrix, transpose_b=True) + tf.cast(
        self.bias, hidden.dtype)
