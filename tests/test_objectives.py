"""Tests of the loss strategies the trainer calls (training/objectives.py)."""

import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext.training import objectives
from im2txt_ext.training.losses import masked_cross_entropy


class _FixedDecoder:
  """Returns fixed logits from teacher_forced and counts the calls."""

  def __init__(self, logits):
    self.logits = logits
    self.calls = 0

  def teacher_forced(self, features, input_ids, training=False):
    del features, input_ids
    assert training
    self.calls += 1
    return self.logits, {}


def _inputs(smoothing=0.0, words=None):
  logits = tf.constant([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])  # [1, 2, 3]
  batch = {"input_ids": tf.zeros([1, 2], tf.int32),
           "target_ids": tf.constant([[0, 2]]),
           "mask": tf.constant([[1.0, 0.0]])}  # The second word is padding.
  words = tf.reduce_sum(batch["mask"]) if words is None else words
  return objectives.LossInputs(_FixedDecoder(logits), None, batch, None,
                               words, label_smoothing=smoothing), logits


def test_cross_entropy_of_the_real_words():
  inputs, logits = _inputs()
  loss, logs = objectives.CrossEntropy()(inputs)
  nll = -np.log(np.exp(2.0) / np.sum(np.exp([2.0, 0.0, -1.0])))
  assert float(loss) == pytest.approx(nll, rel=1e-6)
  assert float(logs["cross_entropy"]) == pytest.approx(nll, rel=1e-6)
  # Under distribution N is the global batch's words: twice as many here.
  half, _ = objectives.CrossEntropy()(_inputs(words=tf.constant(2.0))[0])
  assert float(half) == pytest.approx(nll / 2, rel=1e-6)
  assert float(masked_cross_entropy(logits, inputs.batch["target_ids"],
                                    inputs.batch["mask"])[0]) == \
      pytest.approx(nll, rel=1e-6)


def test_label_smoothing_trains_on_the_smoothed_target_and_logs_the_nll():
  inputs, logits = _inputs(smoothing=0.1)
  loss, logs = objectives.CrossEntropy()(inputs)
  log_probs = tf.nn.log_softmax(logits[0, 0]).numpy()
  smoothed = 0.9 * -log_probs[0] + 0.1 * -np.mean(log_probs)
  assert float(loss) == pytest.approx(smoothed, rel=1e-6)
  assert float(logs["cross_entropy"]) == pytest.approx(-log_probs[0],
                                                       rel=1e-6)


class _Term(objectives.LossTerm):
  """A constant loss with a statistic; records the totals it is given."""

  def __init__(self, name, value):
    self.name, self.value, self.totals = name, value, None

  def prepare(self, inputs):
    return self.value * 10

  def __call__(self, inputs, prepared=None):
    assert prepared == self.value * 10
    loss = tf.constant(self.value)
    return loss, {self.name: loss}

  def statistics(self, inputs):
    return {"count": tf.constant(self.value)}

  def update(self, totals):
    self.totals = totals


def test_objective_weighs_terms_and_routes_statistics():
  first, second = _Term("a", 1.0), _Term("b", 3.0)
  objective = objectives.Objective([(1.0, first), (0.5, second)])
  inputs, _ = _inputs()
  loss, logs = objective(inputs, objective.prepare(inputs))
  assert float(loss) == 2.5
  assert {k: float(v) for k, v in logs.items()} == {"a": 1.0, "b": 3.0,
                                                    "loss": 2.5}
  statistics = objective.statistics(inputs)
  objective.update({k: {"count": v["count"] * 2}
                    for k, v in statistics.items()})
  assert float(first.totals["count"]) == 2.0
  assert float(second.totals["count"]) == 6.0


def test_the_forward_pass_is_shared_by_the_terms():
  inputs, _ = _inputs()
  objective = objectives.Objective([(1.0, objectives.CrossEntropy()),
                                    (2.0, objectives.CrossEntropy())])
  loss, _ = objective(inputs)
  single, _ = objectives.CrossEntropy()(inputs)
  assert float(loss) == pytest.approx(3 * float(single))
  assert inputs.decoder.calls == 1
