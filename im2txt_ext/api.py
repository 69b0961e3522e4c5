"""One call from images to captions, with any model the library writes.

    import im2txt_ext
    for option in im2txt_ext.caption("photo.jpg", model="runs/demo"):
      print(option["caption"], option["log_prob"])
    im2txt_ext.caption([path, jpeg_bytes, pil_image, array],
                       model="exports/demo", beam_size=5, top_k=3)

Images: a file path (str or os.PathLike), encoded bytes (JPEG, PNG, GIF or
BMP), a PIL image, or a uint8 or float array [H, W, 3] in 0..255 (numpy or
TensorFlow); one image, or a list of them. PIL images and arrays are
captioned through PNG, so an image gives the same captions in every form
(a float array is rounded to whole grey levels).

Models: a training run directory (with config.json), a list of two or
more, searched as one ensemble (``models.ensemble``), an export folder
(with saved_model.pb, written by im2txt-export), or a model already loaded:
a ``Captioner`` or what ``tf.saved_model.load`` returns for an export. A
path is loaded once and kept, per (absolute paths, kind), until
``caption.cache_clear()``.

Search options (keyword arguments): method (beam, greedy or sample),
max_length, for beam search beam_size and top_k, for sampling temperature
and top_k, and the decoding options of ``decoding.options_of(method)``;
those not given take ``decoding.defaults_of(method)`` and the
``Captioner.search`` sizes. An export searches with beam search only and
takes the options of its caption_with_options signature
(``decoding.SIGNATURE_OPTIONS``); its sizes default to those it was
exported with.
"""

import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf

from im2txt_ext import decoding, export, runs
from im2txt_ext.data.tfrecords import check_image_bytes, read_image_bytes
from im2txt_ext.errors import InputError, graph_error_line
from im2txt_ext.inference import Captioner

RUN, EXPORT = "run", "export"
# How a path of each kind is loaded.
LOADERS = {RUN: Captioner, EXPORT: export.load}

_models = {}  # (absolute path or paths, kind) -> loaded model.


def model_kind(model):
  """RUN or EXPORT: what a path holds, or what a loaded model is; RUN for
  a list of run directories (an ensemble)."""
  if isinstance(model, Captioner):
    return RUN
  if isinstance(model, (list, tuple)):
    if not model:
      raise InputError("model: an empty list of run directories")
    if len(model) == 1:
      return model_kind(model[0])
    for path in model:
      if model_kind(path) != RUN:
        raise InputError("an ensemble is of training run directories; an "
                         "export is one model", path)
    return RUN
  if not isinstance(model, (str, os.PathLike)):
    if "caption_with_options" in getattr(model, "signatures", {}):
      return EXPORT
    raise InputError("model must be a run directory, an export folder, a "
                     "Captioner or a loaded export, got "
                     f"{type(model).__name__}")
  path = os.fspath(model)
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return EXPORT
  if os.path.isdir(path) and not os.path.isfile(
      os.path.join(path, runs.CONFIG_FILE)):
    raise InputError(f"neither a run directory (no {runs.CONFIG_FILE}) nor "
                     "an export (no saved_model.pb)", path)
  return RUN  # Not there: the run's own error says so.


def load(model):
  """The loaded model of a path or a list of run directories (loaded once,
  then cached); a loaded model as it is."""
  if isinstance(model, (list, tuple)):
    paths = tuple(os.path.abspath(os.fspath(p)) for p in model)
    if len(paths) == 1:
      return load(paths[0])
    key = (paths, model_kind(model))
  elif isinstance(model, (str, os.PathLike)):
    key = (os.path.abspath(os.fspath(model)), model_kind(model))
  else:
    return model
  if key not in _models:
    _models[key] = LOADERS[key[1]](key[0])
  return _models[key]


def has_attention(model):
  """Whether a loaded model returns attention weights with its captions."""
  if model_kind(model) == RUN:
    return model.decoder.has_attention
  return "attention" in model.signatures["serving_default"].structured_outputs


def check_options(kind, options):
  """InputError naming any search option that a model of ``kind`` does not
  take."""
  method = options.get("method", "beam")
  if kind == EXPORT:
    if method != "beam":
      raise InputError(f"an export searches with method beam only, not "
                       f"{method!r}")
    decoding.check_names(options, ("method",) + decoding.SIZES["beam"] +
                         decoding.SIGNATURE_OPTIONS, "an export")
  else:
    decoding.check_search_args(options)


def encode_image(image, name):
  """Encoded bytes of an image in any accepted form; InputError naming it
  (``name``: "image i" unless it is a path) where it cannot be captioned."""
  if isinstance(image, (str, os.PathLike)):
    return read_image_bytes(os.fspath(image))
  if isinstance(image, (bytes, bytearray, memoryview)):
    return check_image_bytes(bytes(image), name)
  if isinstance(image, Image.Image):
    image = image.convert("RGB")  # As TensorFlow decodes: alpha dropped.
  else:
    image = Image.fromarray(_pixels(image, name))
  buffer = io.BytesIO()
  image.save(buffer, "PNG")
  return buffer.getvalue()


def _pixels(array, name):
  """uint8 [H, W, 3] of an array image in 0..255 (floats rounded)."""
  pixels = np.asarray(array)
  if pixels.ndim != 3 or pixels.shape[-1] != 3 or not pixels.size:
    raise InputError("not an image: give a path, encoded bytes, a PIL image "
                     f"or an [H, W, 3] array, not {type(array).__name__} of "
                     f"shape {pixels.shape}", name)
  if pixels.dtype == np.uint8:
    return pixels
  if not (np.issubdtype(pixels.dtype, np.number) and
          np.all((pixels >= 0) & (pixels <= 255))):
    raise InputError(f"pixel values must be numbers in 0..255 (array of "
                     f"{pixels.dtype})", name)
  return np.round(pixels).astype(np.uint8)


def caption(images, model, batch_size=32, attention=False, **options):
  """Captions of images, best first.

  Args:
    images: one image or a list (see the module doc).
    model: a run directory, a list of them (an ensemble), an export
      folder, or a loaded model.
    batch_size: int. Images per call of the model.
    attention: bool. Add each caption's attention weights (attention
      models only).
    **options: the search options (see the module doc).

  Returns:
    For one image, a list of {"caption": str, "log_prob": float[,
    "attention": [T, L] nested list, one map per word and <end>]}; for a
    list of images, one such list per image.
  """
  many = isinstance(images, (list, tuple))
  images = list(images) if many else [images]
  kind = model_kind(model)
  check_options(kind, options)
  model = load(model)
  if attention and not has_attention(model):
    raise InputError("attention=True: this model's decoder has no attention")
  search = (_run_search(model, options) if kind == RUN else
            _export_search(model, options))
  results = []
  for start in range(0, len(images), batch_size):
    encoded = [encode_image(image, f"image {start + i}") for i, image in
               enumerate(images[start:start + batch_size])]
    results.extend(search(encoded, attention))
  return results if many else results[0]


def _run_search(captioner, options):
  """search(encoded images: N bytes, attention: bool) -> N lists of
  captions, with a run's Captioner."""
  def search(encoded, attention):
    features = captioner.encode_images(captioner.decode_images(encoded))
    keys = ("caption", "log_prob") + (("attention",) if attention else ())
    return [[{key: option[key] for key in keys} for option in per_image]
            for per_image in captioner.to_captions(
                captioner.search(features, **options))]
  return search


def _export_search(saved, options):
  """search(encoded images: N bytes, attention: bool) -> N lists of
  captions, with a loaded export: its serving_default without options, else
  its caption_with_options."""
  options = {name: value for name, value in options.items()
             if name != "method"}
  signature = saved.signatures[
      "caption_with_options" if options else "serving_default"]
  inputs = _signature_inputs(saved, signature, options) if options else {}

  def search(encoded, attention):
    try:
      out = signature(images=tf.constant(encoded), **inputs)
    except tf.errors.InvalidArgumentError as e:  # The export's own checks.
      raise InputError(graph_error_line(e.message)) from None
    results = []
    for n, texts in enumerate(out["captions"].numpy().astype(str).tolist()):
      per_image = []
      for k, text in enumerate(texts):
        option = {"caption": text, "log_prob": float(out["log_probs"][n, k])}
        if attention:  # As Captioner.to_captions: the words and <end>.
          option["attention"] = out["attention"][
              n, k, :len(text.split()) + 1].numpy().round(4).tolist()
        per_image.append(option)
      results.append(per_image)
    return results
  return search


def _signature_inputs(saved, signature, options):
  """{input name: tensor} of caption_with_options besides the images
  (``export.option_values``; the API's top_k is the signature's k)."""
  values = export.option_values(saved, {
      "k" if name == "top_k" else name: value
      for name, value in options.items()})
  inputs = {}
  for name, spec in signature.structured_input_signature[1].items():
    if name != "images":
      try:
        inputs[name] = tf.constant(values[name], spec.dtype)
      except TypeError:
        option = "top_k" if name == "k" else name
        raise InputError(f"{option} must be of type {spec.dtype.name}, got "
                         f"{values[name]!r}") from None
  return inputs


caption.cache_clear = _models.clear
