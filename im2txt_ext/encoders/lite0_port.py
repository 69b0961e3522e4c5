"""Former name of `im2txt_ext.encoders.efficientnet_lite_port`, which now
ports EfficientNet-Lite0, Lite1 and Lite2; kept so that existing imports
work. Its functions default to Lite0."""

# pylint: disable=unused-import
from im2txt_ext.encoders.efficientnet_lite_port import (
    build_pretrained, convert, default_pth_path,
    keras_weights_from_state_dict, LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION, port_weights, read_legacy_state_dict,
    save_weights_atomically)


def build_pretrained_lite0(pth=None):
  """EfficientNet-Lite0 classifier (logits [B, 1000]) with ImageNet weights."""
  return build_pretrained("efficientnet_lite0", pth)
