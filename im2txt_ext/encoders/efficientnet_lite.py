"""EfficientNet-Lite0 as a Keras functional model.

Shapes: B batch, S image side, D feature channels.

Reference: Tan and Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019; the Lite variants (TensorFlow
TPU repository, 2020) drop squeeze-excite, use ReLU6 and keep the stem (32)
and head (1280) widths fixed.
"""

import keras

# (repeats, kernel_size, first_stride, expand_ratio, input_filters,
# output_filters) of each stage; Lite0 uses the EfficientNet-B0 stages.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# Name of the layer whose output is the last feature map [B, S/32, S/32, 1280].
FEATURES_LAYER = "top_activation"


def _batch_norm(name):
  return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99,
                                         name=name)


def _relu6(name):
  return keras.layers.ReLU(max_value=6.0, name=name)


def _mbconv_block(x, name, kernel_size, stride, expand_ratio, filters_in,
                  filters_out):
  """Inverted residual block without squeeze-excite: [B, S, S, filters_in]."""
  inputs = x
  if expand_ratio != 1:
    x = keras.layers.Conv2D(filters_in * expand_ratio, 1, use_bias=False,
                            name=name + "expand_conv")(x)
    x = _batch_norm(name + "expand_bn")(x)
    x = _relu6(name + "expand_activation")(x)
  x = keras.layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same",
                                   use_bias=False, name=name + "dwconv")(x)
  x = _batch_norm(name + "bn")(x)
  x = _relu6(name + "activation")(x)
  x = keras.layers.Conv2D(filters_out, 1, use_bias=False,
                          name=name + "project_conv")(x)
  x = _batch_norm(name + "project_bn")(x)
  if stride == 1 and filters_in == filters_out:
    x = keras.layers.Add(name=name + "add")([x, inputs])
  return x


def block_names(stages=LITE0_STAGES):
  """Layer-name prefixes of the blocks in order, e.g. "block3_"."""
  count = sum(stage[0] for stage in stages)
  return [f"block{i}_" for i in range(count)]


def EfficientNetLite0(include_top=True, image_size=224, classes=1000,
                      dropout_rate=0.2, name="efficientnet_lite0"):
  """Builds EfficientNet-Lite0 with random weights.

  The input is an already normalised image, x = (rgb - 127) / 128, as a
  float32 Tensor [B, S, S, 3]; "same" padding is TensorFlow's (extra row and
  column at the bottom and right), as in the released checkpoints.

  Args:
    include_top: bool. Whether to end with global pooling, dropout and the
      classifier. Defaults to True.
    image_size: int or None. Side S of the square input. Defaults to 224.
    classes: int. Number of classifier outputs. Defaults to 1000.
    dropout_rate: float. Dropout before the classifier. Defaults to 0.2.
    name: str. Model name. Defaults to "efficientnet_lite0".

  Returns:
    A `keras.Model` giving logits [B, classes] with `include_top`, else the
    last feature map [B, S/32, S/32, 1280].
  """
  inputs = keras.Input((image_size, image_size, 3), name="image")
  x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False,
                          name="stem_conv")(inputs)
  x = _batch_norm("stem_bn")(x)
  x = _relu6("stem_activation")(x)

  names = iter(block_names())
  for repeats, kernel_size, stride, expand, filters_in, filters_out in (
      LITE0_STAGES):
    for i in range(repeats):
      x = _mbconv_block(x, next(names), kernel_size, stride if i == 0 else 1,
                        expand, filters_in if i == 0 else filters_out,
                        filters_out)

  x = keras.layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(x)
  x = _batch_norm("top_bn")(x)
  x = _relu6(FEATURES_LAYER)(x)
  if include_top:
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
    x = keras.layers.Dense(classes, name="predictions")(x)
  return keras.Model(inputs, x, name=name)
