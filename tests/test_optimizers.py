"""The optimiser's smaller step for the fine-tuned CNN: exactly the step of
the scaled learning rate, for Adam and SGD, with loss scaling too."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from im2txt_ext.config import ExperimentConfig
from im2txt_ext.errors import InputError
from im2txt_ext.training import optimizers


def steps(optimizer_name, scale, precision="float32", rate=0.1):
  """The changes of a decoder and a CNN variable, after two steps with the
  same gradients, with the CNN's rate times ``scale``."""
  config = ExperimentConfig()
  config.train.optimizer, config.train.precision = optimizer_name, precision
  config.train.learning_rate = rate
  config.train.encoder_learning_rate_scale = scale
  decoder_weight = keras.Variable(np.ones(3, np.float32))
  cnn_weight = keras.Variable(np.ones(3, np.float32))
  variables = [decoder_weight, cnn_weight]
  optimizer = optimizers.make_optimizer(config, variables, [cnn_weight])
  for gradient in ([0.5, -2.0, 1.0], [0.25, 1.0, -3.0]):
    optimizer.apply([tf.constant(gradient)] * 2, variables)
  return decoder_weight.numpy() - 1, cnn_weight.numpy() - 1


@pytest.mark.parametrize("name,precision", [
    ("adam", "float32"), ("sgd", "float32"), ("adam", "mixed_float16")])
def test_the_cnn_takes_the_step_of_its_scaled_rate(name, precision):
  decoder_step, cnn_step = steps(name, 0.1, precision)
  assert np.abs(decoder_step).min() > 1e-3
  # The CNN with rate 0.01 steps as the whole model does with 0.01.
  expected, _ = steps(name, 1.0, precision, rate=0.01)
  np.testing.assert_allclose(cnn_step, expected, rtol=1e-5)
  np.testing.assert_allclose(decoder_step, steps(name, 1.0, precision)[0],
                             rtol=1e-6)


def test_scale_zero_keeps_the_cnn_and_a_negative_one_is_refused():
  decoder_step, cnn_step = steps("adam", 0.0)
  assert np.abs(decoder_step).min() > 1e-3
  np.testing.assert_array_equal(cnn_step, 0)
  with pytest.raises(InputError, match="encoder_learning_rate_scale must "
                     "be >= 0, got -1"):
    steps("adam", -1.0)
