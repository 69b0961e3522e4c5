"""Image encoders: CNN backbones, the EfficientNet-Lite0/1/2 port and
feature caches."""

from im2txt_ext.encoders.backbones import build_encoder
from im2txt_ext.encoders.backbones import encoder_side
from im2txt_ext.encoders.backbones import encoder_spec
from im2txt_ext.encoders.backbones import ENCODERS
from im2txt_ext.encoders.backbones import EncoderSpec
from im2txt_ext.encoders.features import extract_features
from im2txt_ext.encoders.features import load_features

__all__ = ["build_encoder", "encoder_side", "encoder_spec", "ENCODERS",
           "EncoderSpec", "extract_features", "load_features"]
