"""What each image encoder is, before anything is built: its default input
side, feature width, spatial grid and preprocessing (no TensorFlow here, so
the commands' flags and the experiment driver can read it cheaply).

Every encoder (``backbones.build_encoder``) returns a dict of
  "pooled": float32 [B, D], the global average of the last feature map, and
  "spatial": float32 [B, L, D], the same map with its h x w grid flattened
    to L = h * w locations (row-major).
"""

import dataclasses

from im2txt_ext.errors import InputError

# The encoders' outputs, and the kinds of feature cache.
OUTPUTS = ("pooled", "spatial")


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  """What a user needs to know about an encoder before building it.

  Attributes:
    image_size: int. Default side S of the square input image, in pixels.
    dim: int. Channels D of the pooled vector and of each spatial location.
    grid: int. Side of the spatial map at `image_size`; L = grid * grid.
      At other sides see `grid_at`.
    min_size: int. Smallest accepted image side, in pixels.
    scale: float or None. Preprocessing x * scale + offset; None: the
      backbone normalises its input itself.
    offset: float or tuple of 3 floats. Per-channel offset (BGR order where
      `bgr`).
    bgr: bool. Whether channels are reversed to BGR before scaling.
    weights_file: str or None. File name of the ImageNet weights without the
      classifier in the Keras cache `$KERAS_HOME/models`.
    grid_rule: callable. Image side -> side of the spatial map.
  """
  image_size: int
  dim: int
  grid: int
  min_size: int
  scale: float = None
  offset: object = 0.0
  bgr: bool = False
  weights_file: str = None
  grid_rule: object = None

  def grid_at(self, image_size):
    """Side of the spatial map at input side `image_size` (L = side**2)."""
    return self.grid_rule(image_size)


def _same_padding_grid(stride):
  """Strided convolutions with "same" (or equivalent) padding: ceil(S/stride).
  """
  return lambda size: -(-size // stride)


def _valid_pooling_grid(stride):
  """2x2 max poolings without padding: floor(S/stride)."""
  return lambda size: size // stride


def _inception_v3_grid(size):
  """InceptionV3's unpadded 3x3 stride-2 reductions and 3x3 convolutions."""
  def halve(side):
    return (side - 3) // 2 + 1
  size = halve(size) - 2  # Convolutions 3x3/2 and 3x3 (then a "same" one).
  size = halve(size) - 2  # Max pool 3x3/2, convolutions 1x1 and 3x3.
  return halve(halve(halve(size)))  # Max pool, mixed3, mixed8.


_TF_SCALING = dict(scale=1 / 127.5, offset=-1.0)  # to -1..1
_CAFFE_SCALING = dict(scale=1.0, offset=(-103.939, -116.779, -123.68),
                      bgr=True)  # BGR minus the ImageNet mean
# EfficientNet-Lite's (rgb - 127) / 128, as its released checkpoints expect.
_LITE = dict(scale=1 / 128, offset=-127 / 128,
             grid_rule=_same_padding_grid(32))
_STRIDE_32 = dict(grid_rule=_same_padding_grid(32))

ENCODERS = {
    "inception_v3": EncoderSpec(
        299, 2048, 8, 75, **_TF_SCALING,
        weights_file=("inception_v3_weights_tf_dim_ordering_tf_kernels_"
                      "notop.h5"),
        grid_rule=_inception_v3_grid),
    "vgg16": EncoderSpec(
        224, 512, 14, 32, **_CAFFE_SCALING,
        weights_file="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        grid_rule=_valid_pooling_grid(16)),
    "vgg19": EncoderSpec(
        224, 512, 14, 32, **_CAFFE_SCALING,
        weights_file="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        grid_rule=_valid_pooling_grid(16)),
    "resnet50": EncoderSpec(
        224, 2048, 7, 32, **_CAFFE_SCALING, **_STRIDE_32,
        weights_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "mobilenet_v2": EncoderSpec(
        224, 1280, 7, 32, **_TF_SCALING, **_STRIDE_32,
        weights_file=("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_"
                      "1.0_{rows}_no_top.h5")),
    "efficientnet_b0": EncoderSpec(
        224, 1280, 7, 32, **_STRIDE_32,
        weights_file="efficientnetb0_notop.h5"),
    # ImageNet top-1 75.1%, 76.7% and 77.6% at their native sides.
    "efficientnet_lite0": EncoderSpec(224, 1280, 7, 32, **_LITE),
    "efficientnet_lite1": EncoderSpec(240, 1280, 8, 32, **_LITE),
    "efficientnet_lite2": EncoderSpec(260, 1280, 9, 32, **_LITE),
    "scene_cnn": EncoderSpec(64, 128, 8, 8, **_TF_SCALING,
                             grid_rule=_valid_pooling_grid(8)),
}


def encoder_spec(name):
  """The `EncoderSpec` of an encoder name; InputError for unknown names."""
  if name not in ENCODERS:
    raise InputError(f"unknown encoder {name!r}; choose one of "
                     f"{', '.join(ENCODERS)}")
  return ENCODERS[name]


def encoder_side(name, image_size=0):
  """The input side S that ``image_size`` means for encoder ``name``: itself,
  or the encoder's native side where 0 or None."""
  return image_size or encoder_spec(name).image_size
