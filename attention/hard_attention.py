"""Hard ("stochastic") attention of Show, Attend and Tell (Xu et al. 2015).

Shape letters: B batch, T caption length, L image locations, D feature
channels.

Everything but the context is the soft decoder's. At step t the context is
the feature of one location s_t ~ Multinoulli(alpha_t) (eq. 8-9), so no
gradient flows through the choice; training follows the estimator of
sec. 4.1 (eq. 10-12) with a surrogate loss whose gradient is that estimate:

  reinforce = -lambda_r * sum_b (R_b - b) * sum_t log p(s_bt) / N
  entropy   = -lambda_e * sum_b sum_t H[alpha_bt] / N

where R_b = log p(y_b | s_b, a) = -sum_t token_nll_bt (held constant), b is
a moving average of R (b <- decay * b + (1 - decay) * mean R over the
captions that fed on samples, after each training step: ``step_statistics``
and ``update_statistics``, with sums over all replicas, so every replica
holds the same b) and N is the number of real words in the (global) batch,
the normaliser of the trainer's cross-entropy, so lambda_r keeps its meaning
in eq. 12 relative to the log-likelihood term. With probability
``expectation_prob`` a caption (all its steps) uses the expected context
sum_i alpha_i a_i instead of samples, as in the paper ("with probability 0.5
... set the sampled attention location to its expected value"); such
captions add nothing to the REINFORCE term and are trained as in soft
attention.

Randomness: samples come from TF's stateful ops (``tf.random.categorical``,
``tf.random.uniform``), so a run is reproducible after
``keras.utils.set_random_seed`` (which the trainer calls with train.seed);
inside a tf.function every call draws new samples.
"""

import keras
import tensorflow as tf

from attention.soft_attention import SoftAttentionDecoder, word_divisor

_TINY = 1e-12  # Floor on alpha before taking logs.


@keras.saving.register_keras_serializable(package="attention")
class HardAttentionDecoder(SoftAttentionDecoder):
  """Show, Attend and Tell with hard (sampled) attention.

  Takes SoftAttentionDecoder's arguments (``doubly_stochastic`` defaults to
  0 here: the paper uses the penalty for soft attention) and:

  Args:
    expectation_prob: float. Probability that a training caption uses the
      expected context instead of sampled locations. Defaults to 0.5.
    reinforce_weight: float. lambda_r of eq. 12. Defaults to 1.0.
    entropy_weight: float. lambda_e of eq. 12. Defaults to 0.01.
    baseline_decay: float. Decay of the moving-average baseline (sec. 4.1
      uses 0.9). Defaults to 0.9.
    inference: str. Context when not training (validation, search):
      "expectation" (sum_i alpha_i a_i, as soft attention; what the
      authors' caption generator feeds) or "argmax" (the most likely
      location's feature). Defaults to "expectation", the better on the
      Flickr8k dev split (README, "Real photos: Flickr8k").

  Training supports teacher forcing only: the shared scheduled-sampling loop
  does not keep the sampled locations' log-probabilities.
  """

  # Per caption and step: log p(s_t) of the location fed on (0 where the
  # expectation was used), and 1 where the caption fed on samples.
  _records = SoftAttentionDecoder._records + ("location_log_prob", "sampled")

  def __init__(self, vocab_size, expectation_prob=0.5, reinforce_weight=1.0,
               entropy_weight=0.01, baseline_decay=0.9,
               inference="expectation", doubly_stochastic=0.0, **kwargs):
    if inference not in ("argmax", "expectation"):
      raise ValueError("inference must be 'argmax' or 'expectation', got "
                       f"{inference!r}")
    super().__init__(vocab_size, doubly_stochastic=doubly_stochastic,
                     **kwargs)
    self.expectation_prob = expectation_prob
    self.reinforce_weight = reinforce_weight
    self.entropy_weight = entropy_weight
    self.baseline_decay = baseline_decay
    self.inference = inference
    # b of eq. 10, float32 scalar; the same on every replica.
    self.reward_baseline = self.add_weight(
        shape=(), initializer="zeros", trainable=False, aggregation="mean",
        name="reward_baseline")

  def get_config(self):
    config = super().get_config()
    config.update(expectation_prob=self.expectation_prob,
                  reinforce_weight=self.reinforce_weight,
                  entropy_weight=self.entropy_weight,
                  baseline_decay=self.baseline_decay,
                  inference=self.inference)
    return config

  def initial_state(self, features, training=False):
    """The soft state plus "use_expectation" float32 [B]: 1 where a caption
    feeds on the expected context, drawn per caption in training."""
    state = super().initial_state(features, training)
    batch_size = tf.shape(features)[:1]
    if training:
      use = tf.random.uniform(batch_size) < self.expectation_prob
    else:
      use = tf.fill(batch_size, self.inference == "expectation")
    state["use_expectation"] = tf.cast(use, tf.float32)
    return state

  def sampled_forward(self, features, input_ids, sampling_prob, training,
                      seed=None):
    del features, input_ids, sampling_prob, training, seed
    raise ValueError("hard_attention trains with teacher forcing only; set "
                     "train.scheduled_sampling=0")

  def _select_context(self, expected, weights, state, training):
    """A sampled (training) or the argmax (inference) location's feature,
    or ``expected`` where state["use_expectation"] is 1."""
    # In float32 even under mixed precision: 1e-12 underflows float16.
    log_weights = tf.math.log(tf.maximum(tf.cast(weights, tf.float32),
                                         _TINY))  # [B, L]
    if training:
      location = tf.random.categorical(log_weights, 1, dtype=tf.int32)[:, 0]
    else:
      location = tf.argmax(weights, axis=-1, output_type=tf.int32)
    chosen = tf.gather(state["features"], location, batch_dims=1)  # [B, D]
    use = tf.cast(state["use_expectation"], expected.dtype)  # [B]
    context = use[:, None] * expected + (1.0 - use[:, None]) * chosen
    log_prob = tf.cast(tf.gather(log_weights, location, batch_dims=1),
                       use.dtype)  # [B]
    return context, {"location_log_prob": (1.0 - use) * log_prob,
                     "sampled": 1.0 - use}

  def auxiliary_losses(self, aux, batch, token_nll, num_words=None):
    """The soft losses plus "reinforce" and "entropy" (see the module doc).

    The "reinforce" value is a surrogate: its gradient is the estimate, its
    value means little.
    """
    losses = super().auxiliary_losses(aux, batch, token_nll, num_words)
    mask = batch["mask"]  # [B, T]
    words = word_divisor(mask, num_words)
    advantage = tf.stop_gradient(_reward(token_nll) - self.reward_baseline) \
        * aux["sampled"][:, 0]  # [B]
    log_p_locations = tf.reduce_sum(aux["location_log_prob"] * mask, axis=1)
    losses["reinforce"] = -self.reinforce_weight * tf.reduce_sum(
        advantage * log_p_locations) / words
    attention = aux["attention"]  # [B, T, L]
    entropy = -tf.reduce_sum(
        attention * tf.math.log(tf.maximum(attention, _TINY)), axis=-1)
    losses["entropy"] = -self.entropy_weight * tf.reduce_sum(
        entropy * mask) / words
    return losses

  def step_statistics(self, aux, batch, token_nll):
    """{"reward": sum of R over the captions that fed on samples,
    "sampled": their number}."""
    del batch
    sampled = aux["sampled"][:, 0]  # [B]
    return {"reward": tf.reduce_sum(_reward(token_nll) * sampled),
            "sampled": tf.reduce_sum(sampled)}

  def update_statistics(self, totals):
    """b <- decay * b + (1 - decay) * mean R; unchanged if none sampled."""
    count = totals["sampled"]
    decay = self.baseline_decay
    baseline = tf.convert_to_tensor(self.reward_baseline)
    self.reward_baseline.assign(tf.where(
        count > 0, decay * baseline + (1.0 - decay) * totals["reward"] /
        tf.maximum(count, 1.0), baseline))


def _reward(token_nll):
  """R = log p(y | s, a) of each caption: float32 [B] from [B, T]."""
  return -tf.reduce_sum(token_nll, axis=1)
