"""Export: a self-contained SavedModel that captions encoded images.

Shape letters: N images, K captions per image, T words, L image locations,
D feature channels, S image side.

Everything runs inside the graph (image decoding and resizing as in
``pipeline.decode_image``, the encoder with its preprocessing, the decoder,
batched beam search and the id-to-word lookup), so serving needs TensorFlow
alone:

    model = tf.saved_model.load("exports/demo")
    out = model.signatures["serving_default"](images=tf.constant([jpeg]))
    out["captions"][0, 0].numpy().decode()

Signatures (a SavedModel signature has no optional inputs, so the defaults
are baked in at export time and a second signature takes them as inputs):
  serving_default(images string [N]) -> captions string [N, K],
    log_probs float32 [N, K] and, for attention decoders, attention
    float32 [N, K, T, L]; beam size, T and K are the export's defaults;
  caption_with_options(images, beam_size, max_length, k, min_length,
    no_repeat_ngram_size, diversity_groups: int32 scalars, length_penalty,
    repetition_penalty, diversity_strength: float32 scalars,
    no_bad_endings: bool scalar), the same outputs with the search and its
    rules (``im2txt_ext.search``) chosen per call;
  caption_features(features float32 [N, D] or [N, L, D]): the same outputs
    for features already extracted by the model's encoder (defaults).
Images may be JPEG, PNG, GIF or BMP; bytes that are not an image, or an
image over ``max_pixels``, fail with InvalidArgumentError naming the image's
index, before anything is decoded. An empty batch gives empty outputs.
The default sizes (beam size, T, K) are kept as the variable
``search_defaults``; the fixed-size signatures use the library's decoding
defaults (``im2txt_ext.decoding``); the length normalisation (plain or
GNMT) is chosen at export time.

Decoders that feed their RNN the word alone (Show and Tell, the RNN
baseline) are exported with their precomputed word inputs
(``word_inputs.PrecomputedWordInputs``): a quarter to a third faster a
step on a CPU, for a [V, 4H] table more in the export (20.8 MB for the
Flickr8k Show and Tell model).

``export`` of several run directories writes their ensemble
(``models.ensemble``: each run's decoder, the first run's encoder) with
the same signatures, so that serving needs nothing else for it either.

With ``xla``, the search of serving_default and caption_features (whose
sizes are fixed) is compiled with XLA: about twice as fast on a CPU for a
small vocabulary (BENCHMARKS.md), but compiled again for each new batch
size, and its log-probabilities may differ from the library's in the last
bits. caption_with_options, whose sizes are inputs, is never compiled.
"""

import os
import shutil
import tempfile

import tensorflow as tf

from im2txt_ext import decoding, runs, search
from im2txt_ext.data import pipeline
from im2txt_ext.errors import InputError
from im2txt_ext.inference import Captioner

MAX_PIXELS = 40_000_000  # Largest accepted image, width x height.

# The options of caption_with_options passed to the search as tensors;
# no_bad_endings switches between two lists of ids instead.
_TENSOR_OPTIONS = tuple(name for name in decoding.SIGNATURE_OPTIONS
                        if name != "no_bad_endings")

# Magic bytes of the accepted formats, in tf.switch_case branch order, and
# the bytes each needs for its width and height.
_FORMATS = ((b"\xff\xd8\xff", 4), (b"\x89PNG\r\n\x1a\n", 24),
            (b"GIF8", 10), (b"BM", 26))


def _image_format(data):
  """Index into _FORMATS of an encoded image, or -1: int32 scalar."""
  kind = tf.constant(-1)
  # The magics exclude each other.
  for i, (magic, header) in enumerate(_FORMATS):
    match = tf.logical_and(
        tf.equal(tf.strings.substr(data, 0, len(magic)), magic),
        tf.strings.length(data) >= header)
    kind = tf.where(match, i, kind)
  return kind


def _header_size(data, kind):
  """(height, width) int64 of an image, read from its header, not decoded."""
  def pair(offset, dtype, little_endian=True):
    raw = tf.strings.substr(data, offset, 2 * dtype.size)
    return tf.cast(tf.io.decode_raw(raw, dtype, little_endian=little_endian),
                   tf.int64)
  return tf.switch_case(kind, [
      lambda: tf.io.extract_jpeg_shape(data, tf.int64)[:2],
      lambda: pair(16, tf.int32, little_endian=False)[::-1],  # IHDR w, h.
      lambda: pair(6, tf.uint16)[::-1],  # Logical screen w, h.
      lambda: tf.abs(pair(18, tf.int32))[::-1],  # w, h (< 0: top-down).
  ])


def decode_images(images, image_size, max_pixels=MAX_PIXELS):
  """Encoded images string [N] -> float32 [N, S, S, 3] in 0..255.

  Each image's format and header size are checked before it is decoded.
  """
  def decode(args):
    index, data = args
    kind = _image_format(data)
    is_image = tf.debugging.Assert(kind >= 0, [tf.strings.format(
        "image {} is not a JPEG/PNG/GIF/BMP", index)])
    with tf.control_dependencies([is_image]):
      size = _header_size(data, tf.identity(kind))  # [2]
    height, width = size[0], size[1]
    small = tf.debugging.Assert(height * width <= max_pixels, [
        tf.strings.format("image {} has {}x{} pixels, more than the {} "
                          "allowed", (index, width, height, max_pixels))])
    with tf.control_dependencies([small]):
      return pipeline.decode_image(tf.identity(data), image_size)
  return tf.map_fn(decode, (tf.range(tf.size(images)), images),
                   fn_output_signature=tf.TensorSpec(
                       [image_size, image_size, 3], tf.float32))


class CaptionModule(tf.Module):
  """The exported object: a decoder with its encoder, vocabulary and search.

  Args:
    captioner: inference.Captioner of the run, or of the ensemble of runs
      (``models.ensemble``), with its encoder: its decoder, the same with
      the inference-only speed-ups that the search runs
      (``word_inputs.for_inference``), vocabulary, image size, special
      words (those the search never emits) and the words <end> may not
      follow when caption_with_options is asked for no bad endings.
    beam_size, max_length, top_k: int. The defaults of serving_default.
    max_pixels: int. Largest accepted image (width x height).
    xla: bool. Compile the search of the fixed-size signatures with XLA.
    length_normalization: "plain" or "gnmt" (``search.beam_search``).
  """

  def __init__(self, captioner, beam_size=3, max_length=20, top_k=1,
               max_pixels=MAX_PIXELS, xla=False,
               length_normalization=decoding.DEFAULTS["length_normalization"]):
    super().__init__(name="captioner")
    decoder, tokens = captioner.decoder, captioner.tokens
    bad_ending_ids = captioner.bad_ending_ids
    check_sizes(decoder, tokens, beam_size, max_length, top_k)
    self.decoder = decoder
    # The tf.Variables under Keras's, tracked by themselves (as Keras's own
    # export does), so that TF1 loaders such as saved_model_cli find them.
    self.weights = [v.value for v in decoder.variables]
    self.searched = captioner.searched
    self.words = tf.constant(captioner.vocab.words)
    self.image_size = captioner.image_size
    self.feature_shape = runs.feature_shape(captioner.model.config)
    # The fixed-size signatures search with the library's decoding defaults.
    rules = decoding.defaults_of("beam")
    self.defaults = dict(beam_size=beam_size, max_length=max_length, k=top_k,
                         **{name: rules[name] for name in _TENSOR_OPTIONS},
                         bad_ending_ids=list(bad_ending_ids)
                         if rules["no_bad_endings"] else ())
    self.search_defaults = tf.Variable([beam_size, max_length, top_k],
                                       trainable=False,
                                       name="search_defaults")
    self.length_normalization = length_normalization
    self.bad_ending_ids = tf.constant(list(bad_ending_ids), tf.int32)
    self.max_pixels = max_pixels
    self.tokens = tokens
    self.xla = xla

  def caption_images(self, images, beam_size, max_length, k, **rules):
    """Encoded images string [N] -> the outputs of ``caption``.

    An empty batch skips the CNN (some layers fail on zero images).
    """
    def encode():
      return self.decoder.encode({"image": decode_images(
          images, self.image_size, self.max_pixels)})
    features = tf.cond(tf.size(images) > 0, encode,
                       lambda: tf.zeros((0,) + self.feature_shape))
    return self.caption(features, beam_size, max_length, k, **rules)

  def caption_with_options(self, images, beam_size, max_length, k,
                           length_penalty, min_length, no_bad_endings,
                           no_repeat_ngram_size, repetition_penalty,
                           diversity_groups, diversity_strength):
    """``caption_images`` with the search's options as tensors."""
    bad_endings = tf.boolean_mask(self.bad_ending_ids, tf.fill(
        tf.shape(self.bad_ending_ids), no_bad_endings))
    return self.caption_images(
        images, beam_size, max_length, k, length_penalty=length_penalty,
        min_length=min_length, bad_ending_ids=bad_endings,
        no_repeat_ngram_size=no_repeat_ngram_size,
        repetition_penalty=repetition_penalty,
        diversity_groups=diversity_groups,
        diversity_strength=diversity_strength)

  def caption(self, features, beam_size, max_length, k, **rules):
    """Features -> {"captions", "log_probs"[, "attention"]}, best first."""
    # No more beams than the words the search may emit (as the Captioner).
    beam_size, max_length, k = search._after(search._check(
        beam_size, max_length, k, search.emitted_words(
            self.decoder, self.tokens), search.longest_caption(self.decoder),
        top_k_name="k"), (beam_size, max_length, k))
    result = self._search(beam_size, max_length, k, rules)(features)
    out = {"captions": self.to_text(result.ids),
           "log_probs": result.log_probs}
    if result.attention is not None:
      out["attention"] = result.attention
    return out

  def _search(self, beam_size, max_length, k, rules):
    """features -> SearchResult; an XLA-compiled tf.function where asked and
    the sizes are Python ints (XLA needs them at compile time)."""
    run = lambda features: search.beam_search(  # noqa: E731
        self.searched, features, beam_size, max_length, top_k=k,
        tokens=self.tokens, length_normalization=self.length_normalization,
        **rules)
    fixed = all(isinstance(x, int) for x in (beam_size, max_length, k))
    return tf.function(run, jit_compile=True) if self.xla and fixed else run

  def to_text(self, ids):
    """int32 ids [N, K, T] -> string [N, K]: the words before <end>, without
    <start>/<pad>, joined by spaces (as Vocabulary.decode)."""
    before_end = tf.math.cumsum(tf.cast(ids == self.tokens.end, tf.int32),
                                axis=-1) == 0
    keep = before_end & (ids != self.tokens.start) & \
        (ids != self.tokens.pad)
    length = tf.shape(ids)[-1]
    words = tf.ragged.boolean_mask(tf.reshape(tf.gather(self.words, ids),
                                              [-1, length]),
                                   tf.reshape(keep, [-1, length]))
    return tf.reshape(tf.strings.reduce_join(words, axis=-1, separator=" "),
                      tf.shape(ids)[:-1])

  def signatures(self):
    """The three concrete functions above, by signature name."""
    images = tf.TensorSpec([None], tf.string, name="images")
    scalar = lambda name, dtype=tf.int32: tf.TensorSpec(  # noqa: E731
        [], dtype, name=name)
    features = tf.TensorSpec((None,) + self.feature_shape, tf.float32,
                             name="features")
    serving = tf.function(
        lambda images: self.caption_images(images, **self.defaults))
    with_options = tf.function(self.caption_with_options)
    from_features = tf.function(
        lambda features: self.caption(features, **self.defaults))
    return {
        "serving_default": serving.get_concrete_function(images),
        "caption_with_options": with_options.get_concrete_function(
            images, scalar("beam_size"), scalar("max_length"), scalar("k"),
            scalar("length_penalty", tf.float32), scalar("min_length"),
            scalar("no_bad_endings", tf.bool),
            scalar("no_repeat_ngram_size"),
            scalar("repetition_penalty", tf.float32),
            scalar("diversity_groups"),
            scalar("diversity_strength", tf.float32)),
        "caption_features": from_features.get_concrete_function(features),
    }


def load(path):
  """The SavedModel an ``export`` wrote at ``path``; InputError where there
  is none."""
  if not os.path.isfile(os.path.join(path, "saved_model.pb")):
    raise InputError("not an exported model (no saved_model.pb; write one "
                     "with im2txt-export)", path)
  return tf.saved_model.load(path)


def default_sizes(saved):
  """{beam_size, max_length, k} of a loaded export's serving_default; {}
  for exports written before they were kept."""
  defaults = getattr(saved, "search_defaults", None)
  return {} if defaults is None else dict(
      zip(decoding.SIGNATURE_SIZES, defaults.numpy().tolist()))


def option_values(saved, options):
  """{input: value} of caption_with_options besides the images: the
  ``options`` given, else the export's sizes (its k at most the beam size
  given), else the library's decoding defaults. InputError where a size is
  neither given nor kept by the export."""
  sizes = default_sizes(saved)
  if "k" in sizes and "k" not in options and "beam_size" in options:
    sizes["k"] = min(sizes["k"], options["beam_size"])
  values = {**{name: decoding.DEFAULTS[name]
               for name in decoding.SIGNATURE_OPTIONS}, **sizes, **options}
  missing = [name for name in decoding.SIGNATURE_SIZES
             if name not in values]
  if missing:
    raise InputError(f"give {', '.join(missing)} (this export does not "
                     "say its defaults)")
  return values


def write_atomically(target, write, marker="saved_model.pb",
                     kind="a SavedModel"):
  """Runs ``write(folder)`` on a new folder beside ``target``, then swaps it in.

  An existing target is moved aside, replaced with one rename and deleted
  only then, so an interrupted export leaves either the old folder or the
  new one at ``target``, never a half-written one, and no temporary folder.
  Only an empty folder or one holding ``marker`` (an export of ``kind``)
  is replaced.
  """
  target = os.path.abspath(target)
  parent, name = os.path.split(target)
  if os.path.exists(target) and not (
      os.path.isdir(target) and (not os.listdir(target) or os.path.isfile(
          os.path.join(target, marker)))):
    raise InputError(f"exists and is not {kind}; not replacing it", target)
  os.makedirs(parent, exist_ok=True)
  new = tempfile.mkdtemp(prefix=f".{name}.new-", dir=parent)
  old = None
  try:
    write(new)
    if os.path.exists(target):
      old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
      os.replace(target, old)  # Onto the empty folder.
    try:
      os.replace(new, target)
    except BaseException:
      if old:
        os.replace(old, target)
        old = None
      raise
  finally:
    for folder in (new, old):
      if folder and os.path.exists(folder):
        shutil.rmtree(folder, ignore_errors=True)


def check_sizes(decoder, tokens, beam_size, max_length, top_k):
  """Checks the default search sizes of an export of ``decoder`` searching
  with ``tokens``; InputError with the search's message if wrong."""
  try:
    search._check(beam_size, max_length, top_k,
                  search.emitted_words(decoder, tokens),
                  search.longest_caption(decoder))
  except ValueError as e:
    raise InputError(str(e)) from None


def export(run_dir, output_dir, which="best", beam_size=3, max_length=20,
           top_k=1, max_pixels=MAX_PIXELS, allow_unk=False, xla=False,
           length_normalization=decoding.DEFAULTS["length_normalization"]):
  """Writes the SavedModel of a run directory's model to ``output_dir``;
  of a list of run directories, their ensemble's (``models.ensemble``:
  the runs' decoders and the first run's encoder).

  Its search never emits ``<unk>`` unless ``allow_unk``; ``xla``: see the
  module doc; ``length_normalization``: see ``search.beam_search``.

  Returns {signature name: (input names, output names)}.
  """
  captioner = Captioner(run_dir, which, allow_unk=allow_unk)
  module = CaptionModule(captioner, beam_size, max_length, top_k, max_pixels,
                         xla, length_normalization)
  signatures = module.signatures()
  write_atomically(output_dir, lambda folder: tf.saved_model.save(
      module, folder, signatures=signatures))
  return {name: ([spec.name for spec in fn.structured_input_signature[0]],
                 sorted(fn.structured_outputs))
          for name, fn in signatures.items()}
