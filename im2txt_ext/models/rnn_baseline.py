"""The seed's RNN baseline: the image enters the output layer at every step.

State update (vanilla cell):  h_{t+1} = tanh(W_h h_t + W_s S_t)
Output:                       p(S_t | I, h_t) = softmax(L_h h_t + L_I I)

The state starts at zero and never sees the image; the image vector I adds
its own logits L_I I at every step. ``cell="lstm"`` or ``"gru"`` replaces
the vanilla cell, to answer the "RNN vs LSTM" question by experiment.
"""

import keras
import tensorflow as tf

from im2txt_ext.models.decoder import StepOutput, WordFedDecoder
from im2txt_ext.models.decoder import make_rnn, zero_cell_state


@keras.saving.register_keras_serializable(package="im2txt_ext")
class RNNBaseline(WordFedDecoder):
  """RNN baseline decoder; see CaptionDecoder for the arguments.

  Defaults to the vanilla tanh cell of the equations above.
  """

  def __init__(self, vocab_size, cell="rnn", **kwargs):
    super().__init__(vocab_size, cell=cell, **kwargs)
    self.rnn = make_rnn(self.cell_type, self.hidden_size)
    # L_I: image features straight to logits; L_h is the shared logits layer.
    self.image_logits = keras.layers.Dense(vocab_size, use_bias=False,
                                           name="image_logits")

  def initial_state(self, features, training=False):
    """features [B, D] -> zero cell state and the image's logits L_I I
    float32 [B, V]."""
    batch_size = keras.ops.shape(features)[0]
    return {"cell": zero_cell_state(self.rnn, batch_size),
            "image_logits": tf.cast(self.image_logits(features),
                                    tf.float32)}

  def emit(self, hidden, cell_state, state, training=False):
    """p(S_t | I, h_t) = softmax(L_h h_t + L_I I)."""
    logits = self.output_logits(hidden, training) + state["image_logits"]
    return StepOutput(logits, {"cell": cell_state,
                               "image_logits": state["image_logits"]}, None)

  def teacher_forced(self, features, input_ids, training=False):
    """Fused form of the step loop: one RNN layer call, one output matmul."""
    state = self.initial_state(features, training)
    hidden, *_ = self.rnn(self.embed(input_ids, training),
                          initial_state=state["cell"], training=training)
    logits = self.output_logits(hidden, training)
    return logits + state["image_logits"][:, None, :], {}
