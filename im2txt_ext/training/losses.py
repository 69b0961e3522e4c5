"""Masked cross-entropy over padded captions, and the perplexity from it."""

import numpy as np
import tensorflow as tf


def masked_cross_entropy(logits, targets, mask, label_smoothing=0.0,
                         num_words=None):
  """Mean negative log-likelihood of the target words, ignoring padding.

  Args:
    logits: float32 [B, T, V].
    targets: int32 [B, T].
    mask: float32 [B, T], 1 on real words.
    label_smoothing: float. Mix of the one-hot target with the uniform
      distribution (Szegedy et al. 2016); 0 = plain cross-entropy.
    num_words: optional float32 scalar, the divisor of the summed loss
      (under distribution: the real words of the global batch, so that the
      replicas' losses add up to the global mean); default: this batch's.

  Returns:
    (loss, token_nll): the mean over real words (scalar), and float32 [B, T]
    per-word negative log-likelihoods of the true words, zero on padding (the
    likelihood that hard attention uses as its reward).
  """
  log_probs = tf.nn.log_softmax(logits)
  token_nll = -tf.gather(log_probs, targets, batch_dims=2) * mask
  if label_smoothing:
    smooth = -tf.reduce_mean(log_probs, axis=-1) * mask
    token_loss = (1.0 - label_smoothing) * token_nll + label_smoothing * smooth
  else:
    token_loss = token_nll
  if num_words is None:
    num_words = tf.reduce_sum(mask)
  loss = tf.reduce_sum(token_loss) / tf.maximum(num_words, 1.0)
  return loss, token_nll


def perplexity(decoder, batches):
  """exp(mean per-word NLL) of the reference captions under the decoder:
  batches with ``input_ids``, ``target_ids``, ``mask`` and images or
  features (e.g. ``Captioner.reference_batches``)."""
  total, words = 0.0, 0.0
  for batch in batches:
    features = decoder.encode(batch, training=False)
    logits, _ = decoder.teacher_forced(features, batch["input_ids"])
    _, token_nll = masked_cross_entropy(logits, batch["target_ids"],
                                        batch["mask"])
    total += float(tf.reduce_sum(token_nll))
    words += float(tf.reduce_sum(batch["mask"]))
  return float(np.exp(total / max(words, 1.0)))
