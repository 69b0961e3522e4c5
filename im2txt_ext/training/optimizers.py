"""The optimiser: Adam or SGD with a learning-rate schedule, a smaller step
for the fine-tuned CNN, and dynamic loss scaling for float16."""

import keras
import tensorflow as tf

from im2txt_ext.errors import InputError


def learning_rate(config):
  """The decoder's learning rate or schedule of ``config.train``."""
  t = config.train
  if t.lr_schedule == "constant":
    return t.learning_rate
  if t.lr_schedule == "exponential":
    return tf.keras.optimizers.schedules.ExponentialDecay(
        t.learning_rate, t.lr_decay_steps, t.lr_decay_rate, staircase=True)
  if t.lr_schedule == "cosine":
    return tf.keras.optimizers.schedules.CosineDecay(t.learning_rate,
                                                     t.num_steps)
  raise InputError(f"unknown lr_schedule {t.lr_schedule!r}: use constant, "
                   "exponential or cosine")


class _ScaledRates:
  """An optimiser with the learning rate times ``scale`` for some of its
  variables (``scale_variables``) and as it is for the others. Adam's and
  SGD's steps are linear in the rate, so these variables take exactly the
  steps of that rate, with the same optimiser state."""

  scale = 1.0
  _scaled = frozenset()  # Indices in the list the optimiser was built on.

  def scale_variables(self, variables, scale):
    """Scales the rate of ``variables`` (some of those ``build`` took)."""
    wanted = {id(v) for v in variables}
    self._scaled = frozenset(i for i, v in enumerate(self._trainable_variables)
                             if id(v) in wanted)
    self.scale = scale

  def update_step(self, gradient, variable, learning_rate):
    # The index is found at trace time, so the check costs nothing per step.
    if self._get_variable_index(variable) in self._scaled:
      learning_rate = learning_rate * self.scale
    return super().update_step(gradient, variable, learning_rate)


class Adam(_ScaledRates, keras.optimizers.Adam):
  pass


class SGD(_ScaledRates, keras.optimizers.SGD):
  pass


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def make_optimizer(config, variables, encoder_variables=()):
  """The optimiser of ``config.train``, built on ``variables`` (every
  variable that may ever train, so that it is one object before and after
  the CNN starts training), the rate of ``encoder_variables`` times
  ``train.encoder_learning_rate_scale``; wrapped in dynamic loss scaling
  for ``mixed_float16``."""
  t = config.train
  if t.optimizer not in OPTIMIZERS:
    raise InputError(f"unknown optimizer {t.optimizer!r}: use "
                     f"{' or '.join(OPTIMIZERS)}")
  if t.encoder_learning_rate_scale < 0:
    raise InputError("train.encoder_learning_rate_scale must be >= 0, got "
                     f"{t.encoder_learning_rate_scale}")
  optimizer = inner = OPTIMIZERS[t.optimizer](learning_rate(config))
  if t.precision == "mixed_float16":
    # Dynamic loss scaling keeps small float16 gradients from underflowing.
    optimizer = keras.optimizers.LossScaleOptimizer(inner)
  optimizer.build(variables)
  if encoder_variables and t.encoder_learning_rate_scale != 1:
    inner.scale_variables(encoder_variables, t.encoder_learning_rate_scale)
  return optimizer
