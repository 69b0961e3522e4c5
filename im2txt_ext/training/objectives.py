"""Training losses as strategies: the trainer calls them, they know no loop.

Shape letters: B batch, T caption length, V vocabulary.

A loss term maps one replica's ``LossInputs`` (the decoder, the image
features, the batch, the step's seed and N, the real words of the global
batch) to ``(loss, logs)``: a scalar, this replica's share of a sum divided
by N, and a dict of scalars to log, each such a share too. A term may also
have

  * ``prepare(inputs)``: what it needs that carries no gradient (SCST's
    samples and rewards); the trainer runs it outside the gradient tape and
    passes the result back as ``prepared``;
  * ``statistics(inputs)`` and ``update(totals)``: sums over the batch, and
    the update of untrained state from them summed over all replicas (hard
    attention's moving-average reward baseline), which the trainer calls
    after the step, so every replica updates alike.

Terms that read the reference captions' teacher-forced pass share it
through ``inputs.forward()``, computed once per step. ``Objective`` is a
weighted sum of terms; the trainer makes the configured one
(``trainer.objective_of``): the cross-entropy and the decoder's own terms
(``decoder.loss_terms()``, e.g. the attention regularisers), with SCST in
front where ``train.scst`` is on.
"""

import collections

import tensorflow as tf

from im2txt_ext.training.losses import word_losses

Forward = collections.namedtuple("Forward", "logits aux token_nll smooth_nll")
Forward.__doc__ = """The reference captions' forward pass: logits float32
[B, T, V], the decoder's per-step records (aux, e.g. "attention" [B, T, L]),
the per-word negative log-likelihoods of the targets token_nll [B, T] (zero
on padding) and, with label smoothing, the smoothed ones (else None)."""


class LossInputs:
  """What a loss term may read in one replica's training step.

  Args:
    decoder: CaptionDecoder.
    features: float32 [B, D] or [B, L, D], computed under the tape.
    batch: dict with "input_ids", "target_ids", "mask" float32 [B, T] (and
      "image_id" where a term reads it).
    seed: int32 [2], the step's seed for stateless draws.
    words: float32 scalar N, the real words of the global batch.
    sampling_prob: float32 scalar, scheduled sampling's probability of
      feeding the model's own word (0: teacher forcing).
    scheduled_sampling: bool. Whether the forward pass is the step loop
      that samples (``decoder.sampled_forward``).
    label_smoothing: float. Also compute ``Forward.smooth_nll`` with it.
    forward: optional ``Forward`` of the batch, computed beforehand.
  """

  def __init__(self, decoder, features, batch, seed, words,
               sampling_prob=0.0, scheduled_sampling=False,
               label_smoothing=0.0, forward=None):
    self.decoder = decoder
    self.features = features
    self.batch = batch
    self.seed = seed
    self.words = words
    self.sampling_prob = sampling_prob
    self.scheduled_sampling = scheduled_sampling
    self.label_smoothing = label_smoothing
    self._forward = forward

  def forward(self):
    """The reference captions' ``Forward`` pass, computed on first use."""
    if self._forward is None:
      batch, decoder = self.batch, self.decoder
      if self.scheduled_sampling:
        logits, aux = decoder.sampled_forward(
            self.features, batch["input_ids"], self.sampling_prob, True,
            self.seed)
      else:
        logits, aux = decoder.teacher_forced(self.features,
                                             batch["input_ids"],
                                             training=True)
      token_nll, smooth_nll = word_losses(
          logits, batch["target_ids"], batch["mask"], self.label_smoothing)
      self._forward = Forward(logits, aux, token_nll, smooth_nll)
    return self._forward


class LossTerm:
  """Base of the loss terms: no preparation, no statistics."""

  # Where the term needs the teacher-forced pass (no scheduled sampling):
  # why, as a phrase for the error message; None otherwise.
  teacher_forcing_only = None

  def prepare(self, inputs):
    del inputs

  def __call__(self, inputs, prepared=None):
    raise NotImplementedError

  def statistics(self, inputs):
    del inputs
    return {}

  def update(self, totals):
    del totals


class CrossEntropy(LossTerm):
  """Per-word negative log-likelihood of the reference captions,
  -sum log p(y_t | y_<t, I) / N, with optional label smoothing (Szegedy et
  al. 2016; the smoothed target is optimised, the plain one logged).

  Logs "cross_entropy", the plain per-word NLL (log-perplexity)."""

  def __call__(self, inputs, prepared=None):
    forward = inputs.forward()
    divisor = tf.maximum(inputs.words, 1.0)
    plain = tf.reduce_sum(forward.token_nll) / divisor
    loss = plain if forward.smooth_nll is None else \
        tf.reduce_sum(forward.smooth_nll) / divisor
    return loss, {"cross_entropy": plain}


class Objective(LossTerm):
  """sum_k w_k L_k over (weight, term) pairs; logs every term's logs and
  "loss", the sum."""

  def __init__(self, weighted_terms):
    self.weighted_terms = list(weighted_terms)

  @property
  def terms(self):
    return [term for _, term in self.weighted_terms]

  def prepare(self, inputs):
    return [term.prepare(inputs) for term in self.terms]

  def __call__(self, inputs, prepared=None):
    prepared = prepared or [None] * len(self.weighted_terms)
    total, logs = 0.0, {}
    for (weight, term), ready in zip(self.weighted_terms, prepared):
      loss, term_logs = term(inputs, ready)
      total += weight * loss
      logs.update(term_logs)
    return total, {**logs, "loss": total}

  def statistics(self, inputs):
    """{index: the k-th term's statistics} for the terms that have any."""
    per_term = [term.statistics(inputs) for term in self.terms]
    return {str(k): stats for k, stats in enumerate(per_term) if stats}

  def update(self, totals):
    for k, term in enumerate(self.terms):
      if str(k) in totals:
        term.update(totals[str(k)])
