"""Captions from a TFLite (LiteRT) export, in numpy: the mobile runtime.

``im2txt-export --format=tflite`` (``im2txt_ext.lite_export``) writes a
folder in the split layout that mobile runtimes use for sequence
generation:

  encoder.tflite  image float32 [N, S, S, 3] (RGB in 0..255, resized to S)
                  -> the decoder's initial state, one output per state
                  entry, ``state_<path>`` (e.g. state_cell_0, state_keys);
  step.tflite     one decoder step: word_ids int32 [N] and every
                  ``state_<path>`` -> logits float32 [N, V], for attention
                  decoders attention float32 [N, L], and the new value of
                  every entry that a step changes. An entry that goes in but
                  does not come out is static (an image's features,
                  attention keys, a Transformer's memory): the same at every
                  step and for every beam of an image;
  vocab.txt       the run's vocabulary (``word<TAB>count``, ids by line);
  lite.json       the ids of the special words, the banned words and the
                  bad endings (``no_bad_endings``), the image side, the
                  most steps and the search defaults.

``LiteCaptioner`` runs the encoder, then greedy or beam search over the
step model, one image at a time, with the search of ``im2txt_ext.search``
(the same ranking, pool of finished captions, exact early stop and rules),
so float32 models give the SavedModel's captions. It needs numpy, pillow and
an interpreter: ``ai_edge_litert`` where installed, else TensorFlow's
``tf.lite.Interpreter``; no TensorFlow otherwise.

    captioner = LiteCaptioner("exports/demo_lite")
    captioner.caption_files(["photo.jpg"])[0]["caption"]
"""

import collections
import json
import os

import numpy as np

from im2txt_ext import decoding
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.errors import InputError

ENCODER_FILE = "encoder.tflite"
STEP_FILE = "step.tflite"
VOCAB_FILE = "vocab.txt"
MANIFEST_FILE = "lite.json"
FORMAT = "im2txt_ext.lite/1"  # lite.json's "format".
STATE_PREFIX = "state_"  # Of every state entry's name (lite_export).
WEIGHTS = ("float32", "float16", "int8")
NEG_INF = np.float32(-1e9)  # search.NEG_INF: a banned word's logit.
LENGTH_NORMALIZATIONS = ("plain", "gnmt")
# Options of the library's searches that this runtime does not offer, with
# the value that turns each off.
UNSUPPORTED = {"diversity_groups": 1, "diversity_strength": 0.0}

LiteResult = collections.namedtuple(
    "LiteResult", "ids log_probs scores lengths attention")
LiteResult.__doc__ = """One image's captions, best first (as
``search.SearchResult`` without the batch): ids int32 [k, T], log_probs,
scores float32 [k], lengths int32 [k], attention float32 [k, T, L] or
None."""

_Rules = collections.namedtuple(
    "_Rules", "end_id banned_ids min_length bad_ending_ids "
    "no_repeat_ngram_size repetition_penalty")


def interpreter_class():
  """ai_edge_litert's Interpreter where installed, else TensorFlow's
  ``tf.lite.Interpreter``; InputError where there is neither."""
  try:
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter
  except ImportError:
    pass
  try:
    import tensorflow as tf
  except ImportError:
    raise InputError("no TFLite interpreter: pip install ai-edge-litert "
                     "(or tensorflow)") from None
  return tf.lite.Interpreter


class _Model:
  """The one signature of a .tflite file, called with numpy arrays by name:
  ``model(**inputs) -> {output name: array}``."""

  def __init__(self, path, num_threads=None):
    if not os.path.isfile(path):
      raise InputError("missing from the TFLite export", path)
    try:
      interpreter = interpreter_class()(model_path=path,
                                        num_threads=num_threads)
      self._run = interpreter.get_signature_runner()
    except ValueError as e:
      first = (str(e).splitlines() or ["unreadable"])[0]
      raise InputError(f"not a TFLite model ({first})", path) from None
    self.inputs = self._run.get_input_details()
    self.outputs = self._run.get_output_details()

  def __call__(self, **inputs):
    return self._run(**{name: np.asarray(value, self.inputs[name]["dtype"])
                        for name, value in inputs.items()})


def resize_bilinear(image, size):
  """float32 [H, W, C] -> [size, size, C]: TensorFlow's bilinear resize
  with half-pixel centres and no antialiasing (``tf.image.resize``, as
  ``pipeline.decode_image``), in float32 numpy."""
  image = np.asarray(image, np.float32)

  def axis(in_size):
    """Lower and upper source index and the weight of the upper, per
    output index."""
    scale = np.float32(in_size / size)
    x = (np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale - \
        np.float32(0.5)
    floor = np.floor(x)
    lower = np.maximum(floor, 0).astype(np.int64)
    upper = np.minimum(np.ceil(x), in_size - 1).astype(np.int64)
    return lower, upper, (x - floor).astype(np.float32)

  (y0, y1, dy), (x0, x1, dx) = axis(image.shape[0]), axis(image.shape[1])
  dx = dx[None, :, None]

  def row(ys):
    left, right = image[ys][:, x0], image[ys][:, x1]
    return left + (right - left) * dx
  top, bottom = row(y0), row(y1)
  return top + (bottom - top) * dy[:, None, None]


def load_image(image, size):
  """A path, encoded bytes or an [H, W, 3] array (0..255) -> float32
  [size, size, 3] in 0..255: decoded by PIL (JPEGs with the accurate
  integer DCT, as TensorFlow's decoding in the library) and resized as
  ``pipeline.decode_image``."""
  if isinstance(image, (str, os.PathLike, bytes)):
    import io
    from PIL import Image
    source = io.BytesIO(image) if isinstance(image, bytes) else image
    try:
      with Image.open(source) as opened:
        image = np.asarray(opened.convert("RGB"))
    except OSError as e:
      where = None if isinstance(source, io.BytesIO) else image
      raise InputError(f"cannot read the image ({e})", where) from None
  image = np.asarray(image, np.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise InputError(f"an image is [H, W, 3], not {list(image.shape)}")
  if image.shape[:2] != (size, size):
    image = resize_bilinear(image, size)
  return np.clip(image, 0.0, 255.0)


def _logsumexp(logits):
  """float32 [N, V] -> [N], as tf.reduce_logsumexp."""
  top = logits.max(-1, keepdims=True)
  top = np.where(np.isfinite(top), top, np.float32(0))
  return (np.log(np.exp(logits - top).sum(-1, keepdims=True)) + top)[:, 0]


def _score(log_probs, lengths, length_penalty, length_normalization):
  """log_probs / lp(lengths) (``search._score``); NEG_INF for the
  impossible."""
  lengths = np.float32(lengths)
  if length_normalization == "gnmt":
    lengths = (np.float32(5) + lengths) / np.float32(6)
  norm = np.power(lengths, np.float32(length_penalty))
  return np.where(log_probs > NEG_INF / 2, log_probs / norm,
                  NEG_INF).astype(np.float32)


def _word_mask(ids, use, vocab_size):
  """bool [N, V]: the words ids[n, j] for which use[n, j] holds."""
  mask = np.zeros((ids.shape[0], vocab_size), bool)
  rows, columns = np.nonzero(use)
  mask[rows, ids[rows, columns]] = True
  return mask


def _apply_rules(logits, rules, t, words, ids, runs):
  """``search._apply_rules`` in numpy: logits float32 [N, V] of step t
  (words: [N] the words fed; ids, runs: [N, T])."""
  logits = np.array(logits, np.float32)
  vocab_size = logits.shape[-1]
  written = np.arange(ids.shape[-1])[None] < t
  if rules.repetition_penalty != 1.0:
    theta = np.float32(rules.repetition_penalty)
    seen = _word_mask(ids, np.broadcast_to(written, ids.shape), vocab_size)
    logits = np.where(seen, np.where(logits > 0, logits / theta,
                                     logits * theta), logits)
  banned = np.zeros(logits.shape, bool)
  banned[:, list(rules.banned_ids)] = True
  n = rules.no_repeat_ngram_size
  if n > 0:
    banned |= _word_mask(ids, written & (runs >= n - 1), vocab_size)
  no_end = np.full(len(words), t < rules.min_length)
  if t > 0:
    no_end |= np.isin(words, rules.bad_ending_ids)
  banned[no_end, rules.end_id] = True
  return np.where(banned, NEG_INF, logits).astype(np.float32)


def _ngram_runs(ids, runs, words):
  """``search._ngram_runs``: runs after ``words`` [N] were written (ids
  [N, T] with them)."""
  before = np.pad(ids[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
  runs_before = np.pad(runs[:, :-1], ((0, 0), (1, 0)))
  return np.where(before == words[:, None], runs_before + 1,
                  0).astype(np.int32)


def _top(values, count):
  """Indices of the ``count`` largest along the last axis, largest first,
  ties to the lower index (as tf.math.top_k)."""
  return np.argsort(-values, axis=-1, kind="stable")[..., :count]


class LiteCaptioner:
  """Captions images with a TFLite export (the module doc's layout).

  Args:
    folder: str. What ``im2txt-export --format=tflite`` wrote.
    num_threads: int or None. The interpreters' CPU threads (None: their
      default).
  """

  def __init__(self, folder, num_threads=None):
    path = os.path.join(folder, MANIFEST_FILE)
    if not os.path.isfile(path):
      raise InputError(f"not a TFLite export (no {MANIFEST_FILE}; write "
                       "one with im2txt-export --format=tflite)", folder)
    with open(path, encoding="utf-8") as f:
      self.manifest = json.load(f)
    if self.manifest.get("format") != FORMAT:
      raise InputError(f"format {self.manifest.get('format')!r} is not "
                       f"{FORMAT!r}", path)
    self.vocab = Vocabulary.load(os.path.join(folder, VOCAB_FILE))
    self.encoder = _Model(os.path.join(folder, ENCODER_FILE), num_threads)
    self.step = _Model(os.path.join(folder, STEP_FILE), num_threads)
    names = [name for name in self.step.inputs
             if name.startswith(STATE_PREFIX)]
    self.static = tuple(name for name in names
                        if name not in self.step.outputs)
    self.has_attention = "attention" in self.step.outputs
    # L, the attention's width (1 where there is none).
    self.locations = int(self.step.outputs["attention"]["shape"][-1]) \
        if self.has_attention else 1
    self.image_size = self.manifest["image_size"]
    self.ids = {key: self.manifest[key] for key in
                ("start_id", "end_id", "pad_id")}
    # <start>, <pad> and the export's banned words (<unk>), as the search.
    self.banned_ids = tuple(sorted(set(self.manifest["banned_ids"]) | {
        self.ids["start_id"], self.ids["pad_id"]}))
    self.bad_ending_ids = tuple(self.manifest["bad_ending_ids"])

  # -- Options ---------------------------------------------------------------

  def defaults(self, method="beam"):
    """{name: default} of a search method's options: the export's sizes,
    length normalisation and decoding rules."""
    return {name: self.manifest["search"][name]
            for name in decoding.SIZES[method] + decoding.options_of(method)
            if name not in UNSUPPORTED}

  def _options(self, method, options):
    """The options of a search, defaults filled in and checked; one-line
    InputError for one that is unknown, unsupported or out of range."""
    if method not in ("beam", "greedy"):
      raise InputError(f"search method {method!r} is not supported by the "
                       "TFLite runtime: use beam or greedy")
    for name, off in UNSUPPORTED.items():
      if name in options and options[name] != off:
        raise InputError(f"{name}={options[name]!r}: diverse beam search is "
                         "not supported by the TFLite runtime")
    allowed = self.defaults(method)
    decoding.check_names(set(options) - set(UNSUPPORTED), allowed,
                         f"the {method} search")
    merged = {**allowed, **{name: value for name, value in options.items()
                            if name in allowed}}
    emitted = len(self.vocab) - len(self.banned_ids)
    beam_size = merged.get("beam_size", 1)
    longest = self.manifest["max_steps"]
    checks = [
        (beam_size, 1, emitted, f"beam size must be a positive integer up "
         f"to {emitted}, the words the search may emit"),
        (merged["max_length"], 1, longest, f"max length must be in "
         f"1..{longest}"),
        (merged.get("top_k", 1), 1, beam_size,
         f"top_k must be in 1..{beam_size}"),
        (merged["min_length"], 0, None, "min length must be >= 0"),
        (merged["no_repeat_ngram_size"], 0, None,
         "no_repeat_ngram_size must be >= 0"),
        (merged["repetition_penalty"], 1e-6, None,
         "repetition penalty must be > 0"),
        (merged.get("length_penalty", 0.0), 0.0, None,
         "length penalty must be >= 0")]
    for value, low, high, message in checks:
      kind = (int, np.integer) if isinstance(low, int) else \
          (int, float, np.number)
      if not isinstance(value, kind) or isinstance(value, bool) or \
         value < low or (high is not None and value > high):
        raise InputError(f"{message}, got {value!r}")
    if merged.get("length_normalization", "plain") not in \
       LENGTH_NORMALIZATIONS:
      raise InputError(f"length normalization must be one of "
                       f"{', '.join(LENGTH_NORMALIZATIONS)}, got "
                       f"{merged['length_normalization']!r}")
    return merged

  def _rules(self, options):
    """The search rules (``search.Rules``) of checked options."""
    return _Rules(self.ids["end_id"], self.banned_ids,
                  options["min_length"],
                  self.bad_ending_ids if options["no_bad_endings"] else (),
                  options["no_repeat_ngram_size"],
                  options["repetition_penalty"])

  # -- Running ---------------------------------------------------------------

  def encode(self, images):
    """float32 images [N, S, S, 3] in 0..255 -> one initial state per image
    ({state name: array [1, ...]})."""
    images = np.asarray(images, np.float32)
    state = self.encoder(image=images)
    return [{name: value[i:i + 1] for name, value in state.items()}
            for i in range(len(images))]

  def search(self, state, method="beam", **options):
    """LiteResult of one image's initial state (from ``encode``).

    ``options``: beam_size, max_length, top_k (beam search), min_length,
    no_bad_endings, no_repeat_ngram_size, repetition_penalty, and for beam
    search length_penalty and length_normalization, as ``Captioner.search``;
    those not given take the export's defaults (``defaults``).
    """
    options = self._options(method, options)
    rules = self._rules(options)
    if method == "greedy":
      return self._greedy(state, options["max_length"], rules)
    return self._beam_search(state, options, rules)

  def _run_step(self, words, state):
    """One step: (outputs, state with the changed entries replaced)."""
    out = self.step(word_ids=words, **state)
    return out, {name: value if name in self.static else out[name]
                 for name, value in state.items()}

  def _greedy(self, state, max_length, rules):
    """``search.greedy`` of one image."""
    ids = np.full((1, max_length), self.ids["pad_id"], np.int32)
    runs = np.zeros_like(ids)
    attention = np.zeros((1, max_length, self.locations), np.float32)
    words = np.array([self.ids["start_id"]], np.int32)
    log_prob, length = np.float32(0), 0
    while length < max_length and words[0] != rules.end_id:
      out, state = self._run_step(words, state)
      logits = _apply_rules(out["logits"], rules, length, words, ids, runs)
      words = np.argmax(logits, -1).astype(np.int32)
      log_prob += logits[0, words[0]] - _logsumexp(logits)[0]
      ids[:, length] = words
      if self.has_attention:
        attention[:, length] = out["attention"]
      runs = _ngram_runs(ids, runs, words)
      length += 1
    log_probs = np.array([log_prob], np.float32)
    return LiteResult(ids, log_probs, log_probs,
                      np.array([max(length, 1)], np.int32),
                      attention if self.has_attention else None)

  def _beam_search(self, state, options, rules):
    """``search.beam_search`` of one image, one group (see its doc)."""
    k, max_length, top_k = (options[name] for name in
                            ("beam_size", "max_length", "top_k"))
    end_id = rules.end_id

    def score(log_probs, lengths):
      return _score(log_probs, lengths, options["length_penalty"],
                    options["length_normalization"])
    state = {name: np.repeat(value, k, 0) for name, value in state.items()}
    words = np.full(k, self.ids["start_id"], np.int32)
    # Only the first beam is alive at the start.
    log_probs = np.where(np.arange(k) == 0, np.float32(0), NEG_INF)
    ids = np.full((k, max_length), self.ids["pad_id"], np.int32)
    runs = np.zeros_like(ids)
    attention = np.zeros((k, max_length, self.locations), np.float32)
    pool = dict(ids=ids[:top_k].copy(), log_probs=np.full(top_k, NEG_INF),
                scores=np.full(top_k, NEG_INF),
                lengths=np.zeros(top_k, np.int32),
                attention=attention[:top_k].copy())

    def into_pool(pool, candidates):
      """The top_k best by score of the pool and the candidates."""
      merged = {key: np.concatenate([pool[key], candidates[key]])
                for key in pool}
      best = _top(merged["scores"], top_k)
      return {key: value[best] for key, value in merged.items()}

    def settled():
      worst = pool["scores"][-1]
      return worst > NEG_INF / 2 and \
          score(log_probs.max(), max_length) <= worst

    t = 0
    while t < max_length and not settled():
      out, state = self._run_step(words, state)
      logits = _apply_rules(out["logits"], rules, t, words, ids, runs)
      log_norm = _logsumexp(logits)
      if self.has_attention:
        attention[:, t] = out["attention"]
      ended = log_probs + logits[:, end_id] - log_norm
      finished = ids.copy()
      finished[:, t] = end_id
      pool = into_pool(pool, dict(
          ids=finished, log_probs=ended, scores=score(ended, t + 1),
          lengths=np.full(k, t + 1, np.int32), attention=attention))
      # The K best extensions by other words than <end> stay live; they
      # are among the K + 1 best words of each beam.
      best_words = _top(logits, min(k + 1, logits.shape[-1]))
      ranking = np.where(best_words == end_id, NEG_INF, np.take_along_axis(
          logits, best_words, 1) - log_norm[:, None])
      candidates = (log_probs[:, None] + ranking).reshape(-1)
      chosen = _top(candidates, k)
      parents = chosen // best_words.shape[-1]
      words = best_words.reshape(-1)[chosen].astype(np.int32)
      log_probs = candidates[chosen]
      ids = ids[parents]
      ids[:, t] = words
      attention = attention[parents]
      runs = _ngram_runs(ids, runs[parents], words)
      state = {name: value if name in self.static else value[parents]
               for name, value in state.items()}
      t += 1
    pool = into_pool(pool, dict(
        ids=ids, log_probs=log_probs, scores=score(log_probs, t),
        lengths=np.full(k, t, np.int32), attention=attention))
    return LiteResult(pool["ids"], pool["log_probs"], pool["scores"],
                      pool["lengths"],
                      pool["attention"] if self.has_attention else None)

  # -- Captions --------------------------------------------------------------

  def to_captions(self, result):
    """LiteResult -> list of {caption, log_prob, score[, attention]}, best
    first (as ``Captioner.to_captions`` for one image)."""
    out = []
    for k in range(len(result.ids)):
      words = self.vocab.decode(result.ids[k])
      option = {"caption": " ".join(words),
                "log_prob": float(result.log_probs[k]),
                "score": float(result.scores[k])}
      if result.attention is not None:
        option["attention"] = result.attention[k, :len(words) + 1] \
            .round(4).tolist()
      out.append(option)
    return out

  def caption(self, images, method="beam", **options):
    """Images (each a path, encoded bytes or an [H, W, 3] array) -> per
    image its list of captions (``to_captions``), best first."""
    self._options(method, options)  # Bad options fail before any work.
    return [self.to_captions(self.search(self.encode(
        load_image(image, self.image_size)[None])[0], method, **options))
            for image in images]

  def caption_files(self, paths, method="beam", **options):
    """One dict per image file: {image, caption, log_prob, captions}."""
    results = []
    for path, captions in zip(paths, self.caption(paths, method,
                                                  **options)):
      results.append({"image": path, "caption": captions[0]["caption"],
                      "log_prob": captions[0]["log_prob"],
                      "captions": captions})
    return results
