"""Several trained decoders searched as one model.

At each step the ensemble's word distribution is the normalised geometric
mean of its M members' (a product of experts):

  log p(y_t | y_<t, I) = 1/M sum_m log p_m(y_t | y_<t, I) - log Z_t,

returned as logits [B, V] (the searches and the cross-entropy normalise
them, which is the - log Z_t). On the Flickr8k dev split it scored a little
above the arithmetic mean of the probabilities (docs/flickr8k.md,
"Ensembles, chosen on dev"). Each member keeps its own state; the members
read the same features, so they must share the encoder, its input side and
the feature kind (``runs.check_ensemble`` checks run directories).

Shape letters: B batch, T caption length, V vocabulary, L image locations.
"""

import tensorflow as tf

from im2txt_ext import search
from im2txt_ext.models.decoder import StepOutput


class Ensemble(tf.Module):
  """The decoder-step contract (``models.decoder``) over ``members``.

  Args:
    members: two or more objects with the decoder-step contract over the
      same vocabulary (trained decoders, or their inference wrappers
      ``word_inputs.PrecomputedWordInputs``). ``encode`` and
      ``teacher_forced`` need members that have them.
  """

  def __init__(self, members):
    super().__init__(name="ensemble")
    if len(members) < 2:
      raise ValueError(f"an ensemble needs two or more members, got "
                       f"{len(members)}")
    sizes = sorted({m.vocab_size for m in members})
    if len(sizes) > 1:
      raise ValueError(f"the members' vocabularies differ in size: {sizes}")
    self.members = list(members)
    self.vocab_size = sizes[0]
    # Attention weights are the members' mean where every member attends.
    self.has_attention = all(m.has_attention for m in members)
    # The searches' bound: the tightest member's.
    self.max_steps = min(map(search.longest_caption, members))
    # Member m's state entry "name" is the ensemble's "m/name".
    self.static_state = tuple(
        self._key(i, name) for i, m in enumerate(members)
        for name in getattr(m, "static_state", ()))

  @staticmethod
  def _key(member, name):
    return f"{member}/{name}"

  def _state_of(self, member, state):
    prefix = self._key(member, "")
    return {key[len(prefix):]: value for key, value in state.items()
            if key.startswith(prefix)}

  @property
  def variables(self):
    """Every member's variables (tf.Module does not find Keras's)."""
    return [v for member in self.members for v in member.variables]

  @property
  def encoder(self):
    return self.members[0].encoder

  @property
  def feature_kind(self):
    return self.members[0].feature_kind

  def encode(self, batch, training=False):
    """The members' shared features of a batch: [B, D] or [B, L, D]."""
    return self.members[0].encode(batch, training)

  def initial_state(self, features, training=False):
    return {self._key(i, name): value
            for i, member in enumerate(self.members)
            for name, value in member.initial_state(features,
                                                    training).items()}

  def step(self, word_ids, state, training=False):
    """One step of every member -> StepOutput(logits [B, V], state,
    attention [B, L] or None)."""
    outputs = [member.step(word_ids, self._state_of(i, state), training)
               for i, member in enumerate(self.members)]
    new_state = {self._key(i, name): value
                 for i, out in enumerate(outputs)
                 for name, value in out.state.items()}
    attention = tf.reduce_mean(tf.stack([out.attention for out in outputs]),
                               0) if self.has_attention else None
    return StepOutput(self._combine([out.logits for out in outputs]),
                      new_state, attention)

  def teacher_forced(self, features, input_ids, training=False):
    """(logits float32 [B, T, V], aux) of the reference captions; aux
    ["attention"] [B, T, L], the members' mean, where they all attend."""
    outputs = [member.teacher_forced(features, input_ids, training)
               for member in self.members]
    aux = {}
    if self.has_attention:
      aux["attention"] = tf.reduce_mean(
          tf.stack([a["attention"] for _, a in outputs]), 0)
    return self._combine([logits for logits, _ in outputs]), aux

  @staticmethod
  def _combine(logits):
    """The mean of the members' log-probabilities [..., V]."""
    return tf.reduce_mean(tf.stack([tf.nn.log_softmax(x) for x in logits]),
                          0)
