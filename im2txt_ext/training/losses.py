"""Masked cross-entropy over padded captions, and the perplexity from it."""

import numpy as np
import tensorflow as tf


def word_losses(logits, targets, mask, label_smoothing=0.0):
  """Per-word losses of the target words, zero on padding.

  Args:
    logits: float32 [B, T, V].
    targets: int32 [B, T].
    mask: float32 [B, T], 1 on real words.
    label_smoothing: float. Mix of the one-hot target with the uniform
      distribution (Szegedy et al. 2016); 0 = plain cross-entropy.

  Returns:
    (token_nll, smooth_nll): float32 [B, T] negative log-likelihoods of the
    true words (the likelihood that hard attention uses as its reward),
    and the label-smoothed losses, or None without smoothing.
  """
  log_probs = tf.nn.log_softmax(logits)
  token_nll = -tf.gather(log_probs, targets, batch_dims=2) * mask
  if not label_smoothing:
    return token_nll, None
  uniform = -tf.reduce_mean(log_probs, axis=-1) * mask
  return token_nll, ((1.0 - label_smoothing) * token_nll +
                     label_smoothing * uniform)


def masked_cross_entropy(logits, targets, mask, label_smoothing=0.0,
                         num_words=None):
  """Mean negative log-likelihood of the target words, ignoring padding.

  Args as ``word_losses``, and num_words: optional float32 scalar, the
  divisor of the summed loss; default: the real words of ``mask``.

  Returns:
    (loss, token_nll): the (smoothed) mean over real words, a scalar, and
    ``word_losses``' token_nll [B, T].
  """
  token_nll, smooth_nll = word_losses(logits, targets, mask, label_smoothing)
  if num_words is None:
    num_words = tf.reduce_sum(mask)
  summed = tf.reduce_sum(token_nll if smooth_nll is None else smooth_nll)
  return summed / tf.maximum(num_words, 1.0), token_nll


def perplexity(decoder, batches):
  """exp(mean per-word NLL) of the reference captions under the decoder:
  batches with ``input_ids``, ``target_ids``, ``mask`` and images or
  features (e.g. ``Captioner.reference_batches``)."""
  # Traced: eagerly, all the image encoder's activations would stay alive
  # together (see ``inference.encoder_fn``).
  @tf.function(reduce_retracing=True)
  def summed_nll(batch):
    features = decoder.encode(batch, training=False)
    logits, _ = decoder.teacher_forced(features, batch["input_ids"])
    _, token_nll = masked_cross_entropy(logits, batch["target_ids"],
                                        batch["mask"])
    return tf.reduce_sum(token_nll)

  total, words = 0.0, 0.0
  for batch in batches:
    total += float(summed_nll({k: v for k, v in batch.items()
                               if k != "image_id"}))
    words += float(tf.reduce_sum(batch["mask"]))
  return float(np.exp(total / max(words, 1.0)))
