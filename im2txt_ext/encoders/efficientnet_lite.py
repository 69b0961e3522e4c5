"""EfficientNet-Lite0, Lite1 and Lite2 as Keras functional models.

Shapes: B batch, S image side, D feature channels.

Reference: Tan and Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019; the Lite variants (TensorFlow
TPU repository, 2020) drop squeeze-excite, use ReLU6 and keep the stem (32)
and head (1280) widths, and the repeats of the first and last stages, fixed
while the other stages scale with the variant's width and depth.
"""

import dataclasses
import math

import keras

from im2txt_ext.errors import InputError

# (repeats, kernel_size, first_stride, expand_ratio, input_filters,
# output_filters) of each stage of EfficientNet-B0, which Lite0 uses as is.
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# Name of the layer whose output is the last feature map [B, h, w, 1280],
# h = w = ceil(S / 32).
FEATURES_LAYER = "top_activation"


@dataclasses.dataclass(frozen=True)
class LiteVariant:
  """Scaling of one EfficientNet-Lite model.

  Attributes:
    width: float. Multiplier of the stages' channels.
    depth: float. Multiplier of the stages' repeats.
    image_size: int. Native input side S, in pixels (the released weights'
      training and evaluation resolution).
    dropout_rate: float. Dropout before the classifier.
  """
  width: float
  depth: float
  image_size: int
  dropout_rate: float


# As in the TensorFlow TPU repository's efficientnet_lite_builder.py.
VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}


def variant(name):
  """The `LiteVariant` of a model name; InputError for unknown names."""
  if name not in VARIANTS:
    raise InputError(f"unknown EfficientNet-Lite model {name!r}; choose one "
                     f"of {', '.join(VARIANTS)}")
  return VARIANTS[name]


def round_filters(filters, width, divisor=8):
  """Channels scaled by `width`, rounded to a multiple of `divisor` without
  losing more than 10%."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def stages(name="efficientnet_lite0"):
  """The stages of a variant, laid out as `BASE_STAGES`."""
  scaling = variant(name)
  scaled = []
  for i, (repeats, kernel_size, stride, expand, filters_in, filters_out) in (
      enumerate(BASE_STAGES)):
    if 0 < i < len(BASE_STAGES) - 1:
      repeats = int(math.ceil(repeats * scaling.depth))
    filters_in = (STEM_FILTERS if i == 0
                  else round_filters(filters_in, scaling.width))
    scaled.append((repeats, kernel_size, stride, expand, filters_in,
                   round_filters(filters_out, scaling.width)))
  return tuple(scaled)


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


def block_names(name="efficientnet_lite0"):
  """Layer-name prefixes of a variant's blocks in order, e.g. "block3_"."""
  count = sum(stage[0] for stage in stages(name))
  return [f"block{i}_" for i in range(count)]


def EfficientNetLite(name="efficientnet_lite0", include_top=True,
                     image_size=None, classes=1000, dropout_rate=None):
  """Builds an EfficientNet-Lite model with random weights.

  The input is an already normalised image, x = (rgb - 127) / 128, as a
  float32 Tensor [B, S, S, 3]; "same" padding is TensorFlow's (extra row and
  column at the bottom and right), as in the released checkpoints.

  Args:
    name: str. A key of `VARIANTS`, also the model's name. Defaults to
      "efficientnet_lite0".
    include_top: bool. Whether to end with global pooling, dropout and the
      classifier. Defaults to True.
    image_size: int or None. Side S of the square input; None: the
      variant's native side (224, 240 or 260).
    classes: int. Number of classifier outputs. Defaults to 1000.
    dropout_rate: float or None. Dropout before the classifier; None: the
      variant's.

  Returns:
    A `keras.Model` giving logits [B, classes] with `include_top`, else the
    last feature map [B, ceil(S/32), ceil(S/32), 1280].
  """
  scaling = variant(name)
  image_size = image_size or scaling.image_size
  inputs = keras.Input((image_size, image_size, 3), name="image")
  x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same",
                          use_bias=False, name="stem_conv")(inputs)
  x = _batch_norm("stem_bn")(x)
  x = _relu6("stem_activation")(x)

  names = iter(block_names(name))
  for repeats, kernel_size, stride, expand, filters_in, filters_out in (
      stages(name)):
    for i in range(repeats):
      x = _mbconv_block(x, next(names), kernel_size, stride if i == 0 else 1,
                        expand, filters_in if i == 0 else filters_out,
                        filters_out)

  x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="top_conv")(x)
  x = _batch_norm("top_bn")(x)
  x = _relu6(FEATURES_LAYER)(x)
  if include_top:
    if dropout_rate is None:
      dropout_rate = scaling.dropout_rate
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout_rate, name="top_dropout")(x)
    x = keras.layers.Dense(classes, name="predictions")(x)
  return keras.Model(inputs, x, name=name)


def EfficientNetLite0(include_top=True, image_size=224, **kwargs):
  """`EfficientNetLite("efficientnet_lite0", ...)`, its former builder."""
  return EfficientNetLite("efficientnet_lite0", include_top, image_size,
                          **kwargs)
