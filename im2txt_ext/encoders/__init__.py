"""Image encoders: CNN backbones (``backbones``), the EfficientNet-Lite0/1/2
port and feature caches (``features``).

The package itself exports only what each encoder is (``specs``), which
needs no TensorFlow; building one is ``backbones.build_encoder``.
"""

from im2txt_ext.encoders.specs import encoder_side
from im2txt_ext.encoders.specs import encoder_spec
from im2txt_ext.encoders.specs import ENCODERS
from im2txt_ext.encoders.specs import EncoderSpec

__all__ = ["encoder_side", "encoder_spec", "ENCODERS", "EncoderSpec"]
