"""Hard ("stochastic") attention of Show, Attend and Tell (Xu et al. 2015).

Shape letters: B batch, T caption length, L image locations, D feature
channels, H the query's width.

The scores are soft attention's; the context is the feature of one location
s_t ~ Multinoulli(alpha_t) (eq. 8-9), so no gradient flows through the
choice, and training adds the estimator of sec. 4.1 (eq. 10-12) as a loss
term whose gradient is that estimate:

  reinforce = -lambda_r * sum_b (R_b - b) * sum_t log p(s_bt) / N
  entropy   = -lambda_e * sum_b sum_t H[alpha_bt] / N

where R_b = log p(y_b | s_b, a) = -sum_t token_nll_bt (held constant; with
``reward="per_word"`` R_b / |y_b|, the mean per word, so that the advantage
is not set by the caption's length), b is
a moving average of R (b <- decay * b + (1 - decay) * mean R over the
captions that fed on samples, after each training step, from sums over all
replicas, so every replica holds the same b) and N is the number of real
words in the (global) batch, the normaliser of the cross-entropy, so
lambda_r keeps its meaning in eq. 12 relative to the log-likelihood term.
With probability ``expectation_prob`` a caption (all its steps) uses the
expected context sum_i alpha_i a_i instead of samples, as in the paper
("with probability 0.5 ... set the sampled attention location to its
expected value"); such captions add nothing to the REINFORCE term and are
trained as in soft attention.

Randomness: samples come from the layer's ``keras.random.SeedGenerator``,
seeded through ``keras.utils.set_random_seed`` (which the trainer calls
with train.seed); inside a tf.function every call draws new samples, and
the generator's state is a variable that the trainer checkpoints, so a
resumed run draws what an unbroken one would.
"""

import keras
import tensorflow as tf

from attention.soft_attention import SoftAttention
from im2txt_ext.training.objectives import LossTerm

_TINY = 1e-12  # Floor on alpha before taking logs.
INFERENCE = ("argmax", "expectation")
REWARDS = ("caption", "per_word")


@keras.saving.register_keras_serializable(package="attention")
class HardAttention(SoftAttention):
  """Hard attention: the context is a sampled location's feature.

  Takes SoftAttention's arguments (``doubly_stochastic`` defaults to 0
  here: the paper uses the penalty for soft attention) and:

  Args:
    expectation_prob: float. Probability that a training caption uses the
      expected context instead of sampled locations. Defaults to 0.5.
    reinforce_weight: float. lambda_r of eq. 12. Defaults to 1.0.
    entropy_weight: float. lambda_e of eq. 12. Defaults to 0.01.
    baseline_decay: float. Decay of the moving-average baseline (sec. 4.1
      uses 0.9). Defaults to 0.9.
    reward: str. R of eq. 10: "caption", the caption's log-likelihood
      summed over its words (the paper's), or "per_word", its mean per
      word. Defaults to "caption".
    inference: str. Context when not training (validation, search):
      "expectation" (sum_i alpha_i a_i, as soft attention; what the
      authors' caption generator feeds) or "argmax" (the most likely
      location's feature). Defaults to "expectation", the better on the
      Flickr8k dev split (docs/flickr8k.md).

  Per step it records "location_log_prob", log p(s_t) of the location fed
  on (0 where the expectation was), and "sampled", 1 where the caption fed
  on samples. Its state adds "use_expectation" float32 [B]: 1 where a
  caption feeds on the expected context, drawn per caption in training.
  """

  records = ("location_log_prob", "sampled")

  def __init__(self, units, expectation_prob=0.5, reinforce_weight=1.0,
               entropy_weight=0.01, baseline_decay=0.9, reward="caption",
               inference="expectation", doubly_stochastic=0.0, **kwargs):
    if inference not in INFERENCE:
      raise ValueError("inference must be 'argmax' or 'expectation', got "
                       f"{inference!r}")
    if reward not in REWARDS:
      raise ValueError("reward must be 'caption' or 'per_word', got "
                       f"{reward!r}")
    super().__init__(units, doubly_stochastic=doubly_stochastic, **kwargs)
    self.expectation_prob = expectation_prob
    self.reinforce_weight = reinforce_weight
    self.entropy_weight = entropy_weight
    self.baseline_decay = baseline_decay
    self.reward = reward
    self.inference = inference
    # b of eq. 10, float32 scalar; the same on every replica. Untrained
    # state of the layer, as BatchNorm's moving mean. It starts at 0, as
    # the authors' baseline_time does (arctic-captions), so the first
    # tens of steps push every sampled location down.
    self.reward_baseline = self.add_weight(
        shape=(), initializer="zeros", trainable=False, aggregation="mean",
        name="reward_baseline")
    self.location_sampler = keras.random.SeedGenerator(
        name="location_sampler")

  def get_config(self):
    config = super().get_config()
    config.update(expectation_prob=self.expectation_prob,
                  reinforce_weight=self.reinforce_weight,
                  entropy_weight=self.entropy_weight,
                  baseline_decay=self.baseline_decay,
                  reward=self.reward,
                  inference=self.inference)
    return config

  def initial_state(self, features, training=False):
    state = super().initial_state(features, training)
    batch_size = tf.shape(features)[:1]
    if training:
      use = keras.random.uniform(batch_size, seed=self.location_sampler
                                 ) < self.expectation_prob
    else:
      use = tf.fill(batch_size, self.inference == "expectation")
    state["use_expectation"] = tf.cast(use, tf.float32)
    return state

  def call(self, query, features, state=None, training=False):
    """A sampled (training) or the argmax (inference) location's feature,
    or the expectation where state["use_expectation"] is 1."""
    if state is None:
      state = self.initial_state(features, training)
    expected, weights = self.expectation(query, features, state)
    # In float32 even under mixed precision: 1e-12 underflows float16.
    log_weights = tf.math.log(tf.maximum(tf.cast(weights, tf.float32),
                                         _TINY))  # [B, L]
    if training:
      location = keras.random.categorical(
          log_weights, 1, dtype="int32", seed=self.location_sampler)[:, 0]
    else:
      location = tf.argmax(weights, axis=-1, output_type=tf.int32)
    chosen = tf.gather(features, location, batch_dims=1)  # [B, D]
    use = tf.cast(state["use_expectation"], expected.dtype)  # [B]
    context = use[:, None] * expected + (1.0 - use[:, None]) * chosen
    log_prob = tf.cast(tf.gather(log_weights, location, batch_dims=1),
                       use.dtype)  # [B]
    return context, weights, {"location_log_prob": (1.0 - use) * log_prob,
                              "sampled": 1.0 - use}

  def loss_terms(self):
    return super().loss_terms() + [LocationReinforce(self)]


class LocationReinforce(LossTerm):
  """The "reinforce" and "entropy" terms of eq. 12 (see the module doc) and
  the update of the layer's reward baseline after each step.

  The "reinforce" value is a surrogate: its gradient is the estimate, its
  value means little.

  Args:
    layer: HardAttention, whose weights and baseline it uses.
  """

  teacher_forcing_only = ("the scheduled-sampling step loop does not keep "
                          "the sampled locations' log-probabilities")

  def __init__(self, layer):
    self.layer = layer

  def __call__(self, inputs, prepared=None):
    forward = inputs.forward()
    aux, mask = forward.aux, inputs.batch["mask"]  # mask [B, T]
    words = tf.maximum(inputs.words, 1.0)
    advantage = tf.stop_gradient(
        self._reward(forward.token_nll, mask) -
        self.layer.reward_baseline) * aux["sampled"][:, 0]  # [B]
    log_p_locations = tf.reduce_sum(aux["location_log_prob"] * mask, axis=1)
    reinforce = -self.layer.reinforce_weight * tf.reduce_sum(
        advantage * log_p_locations) / words
    attention = aux["attention"]  # [B, T, L]
    entropy = -tf.reduce_sum(
        attention * tf.math.log(tf.maximum(attention, _TINY)), axis=-1)
    entropy = -self.layer.entropy_weight * tf.reduce_sum(
        entropy * mask) / words
    return reinforce + entropy, {"reinforce": reinforce, "entropy": entropy}

  def statistics(self, inputs):
    """{"reward": sum of R over the captions that fed on samples,
    "sampled": their number}."""
    forward = inputs.forward()
    sampled = forward.aux["sampled"][:, 0]  # [B]
    reward = self._reward(forward.token_nll, inputs.batch["mask"])
    return {"reward": tf.reduce_sum(reward * sampled),
            "sampled": tf.reduce_sum(sampled)}

  def update(self, totals):
    """b <- decay * b + (1 - decay) * mean R; unchanged if none sampled."""
    count = totals["sampled"]
    decay = self.layer.baseline_decay
    baseline = tf.convert_to_tensor(self.layer.reward_baseline)
    self.layer.reward_baseline.assign(tf.where(
        count > 0, decay * baseline + (1.0 - decay) * totals["reward"] /
        tf.maximum(count, 1.0), baseline))

  def _reward(self, token_nll, mask):
    """R of each caption, float32 [B], from token_nll and mask [B, T]:
    log p(y | s, a), or its mean per word where layer.reward is
    "per_word"."""
    log_likelihood = -tf.reduce_sum(token_nll, axis=1)
    if self.layer.reward == "caption":
      return log_likelihood
    return log_likelihood / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
