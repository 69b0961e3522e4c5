"""Show and Tell (Vinyals et al. 2015, im2txt).

The pooled CNN vector, projected to the embedding size, is fed to the LSTM
once before the first word (eq. 10, x_{-1} = CNN(I)); then each word
embedding W_e S_t is fed (eq. 11) and a dense layer over the hidden state
gives p_{t+1} = softmax(W h_t) (eq. 12).
"""

import keras
import tensorflow as tf

from im2txt_ext.models.decoder import StepOutput, WordFedDecoder
from im2txt_ext.models.decoder import make_rnn, zero_cell_state


@keras.saving.register_keras_serializable(package="im2txt_ext")
class ShowAndTell(WordFedDecoder):
  """Show and Tell decoder; see CaptionDecoder for the other arguments.

  The ``cell`` argument lets the same model run with a GRU or vanilla RNN.

  Args:
    image_dropout: float or None. Drop rate on the image input x_{-1}
      (``decoder_options`` in the config); None: ``dropout``, as im2txt,
      whose dropout wraps the LSTM and so covers the image input too.

  Reference: Vinyals et al., "Show and Tell: A Neural Image Caption
  Generator", CVPR 2015.
  """

  def __init__(self, vocab_size, image_dropout=None, **kwargs):
    super().__init__(vocab_size, **kwargs)
    self.image_dropout = keras.layers.Dropout(
        self.input_dropout.rate if image_dropout is None else image_dropout)
    self.image_embedding = keras.layers.Dense(self.embedding_size,
                                              name="image_embedding")
    self.rnn = make_rnn(self.cell_type, self.hidden_size)

  def get_config(self):
    config = super().get_config()
    config.update(image_dropout=self.image_dropout.rate)
    return config

  def initial_state(self, features, training=False):
    """Feeds the image embedding once, from the zero state (eq. 10):
    features [B, D] -> {"cell": [...]}."""
    image_input = self.image_dropout(self.image_embedding(features),
                                     training=training)
    zeros = zero_cell_state(self.rnn, tf.shape(features)[0])
    _, cell_state = self.rnn.cell(image_input, zeros, training=training)
    return {"cell": list(cell_state)}

  def emit(self, hidden, cell_state, state, training=False):
    """p_{t+1} = softmax(W h_t) (eq. 12)."""
    del state
    return StepOutput(self.output_logits(hidden, training),
                      {"cell": cell_state}, None)

  def teacher_forced(self, features, input_ids, training=False):
    """Fused form of the step loop: one RNN layer call, one output matmul."""
    state = self.initial_state(features, training)
    hidden, *_ = self.rnn(self.embed(input_ids, training),
                          initial_state=state["cell"], training=training)
    return self.output_logits(hidden, training), {}
