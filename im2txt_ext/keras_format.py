"""A trained model as one ``.keras`` file (``keras.saving``), beside the
run's checkpoints and the SavedModel export: the decoder with its encoder,
their configs and weights, for Python and Keras users.

    keras_format.save_keras("runs/demo", "demo.keras")
    decoder = keras_format.load_keras("demo.keras")
    features = decoder.encode({"image": images})  # [B, S, S, 3] in 0..255
    result = search.beam_search(decoder, features,
                                tokens=vocab.special_tokens())

The file holds no vocabulary: the ids are words of the run's ``vocab.txt``.
``keras.saving.load_model`` loads it too, given ``custom_objects()`` (or
once the decoder's module is imported: importing registers its classes).
"""

import os

import keras

from im2txt_ext import runs
from im2txt_ext.encoders import backbones
from im2txt_ext.errors import InputError
from im2txt_ext.models import DECODERS, decoder_class

EXTENSION = ".keras"


def save_keras(run_dir, path, which="best"):
  """Writes the decoder of a run directory, with its image encoder, to
  ``path`` (ending in .keras); a file there is replaced in one rename.

  Args:
    run_dir: str. A training run directory.
    path: str. The file to write.
    which: "best" or "latest" checkpoint (see ``runs.TrainedModel``).
  """
  if not path.endswith(EXTENSION):
    raise InputError(f"a Keras model file's name ends in {EXTENSION}", path)
  decoder = runs.TrainedModel(run_dir, which).decoder
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  partial = path[:-len(EXTENSION)] + ".partial" + EXTENSION
  try:
    keras.saving.save_model(decoder, partial)
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def custom_objects():
  """{registered name: class} of the library's classes that a saved decoder
  names: the decoders and the encoders' own layers."""
  classes = [decoder_class(name) for name in DECODERS] + [
      backbones.ImagePreprocessing, backbones.CoordinateChannels]
  return {keras.saving.get_registered_name(cls): cls for cls in classes}


def load_keras(path):
  """The decoder (a CaptionDecoder) that ``save_keras`` wrote to ``path``."""
  if not os.path.isfile(path):
    raise InputError("Keras model file not found", path)
  return keras.saving.load_model(path, custom_objects=custom_objects())
