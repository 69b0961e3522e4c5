"""Captioning images with a trained model: the library's inference API.

    captioner = Captioner("runs/demo")
    for caption in captioner.caption_files(["a.png"], beam_size=3):
      print(caption["caption"], caption["log_prob"])
    captioner.caption_files(["a.png"], beam_size=4, diversity_groups=2,
                            diversity_strength=0.5, no_repeat_ngram_size=3)
    ensemble = Captioner(["runs/seed0", "runs/seed1", "runs/seed2"])
"""

import os

import tensorflow as tf

from im2txt_ext import decoding, runs, search
from im2txt_ext.data import pipeline, vocabulary
from im2txt_ext.data.tfrecords import read_image_bytes
from im2txt_ext.errors import InputError
from im2txt_ext.models import word_inputs
from im2txt_ext.models.ensemble import Ensemble

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_images(paths):
  """Image files from a list of files and folders (folders: sorted contents)."""
  files = []
  for path in paths:
    if os.path.isdir(path):
      files.extend(os.path.join(path, name) for name in sorted(os.listdir(path))
                   if name.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.isfile(path):
      files.append(path)
    else:
      raise InputError("no such image file or folder", path)
  if not files:
    raise InputError("no image files found in " + ", ".join(paths))
  return files


class Captioner:
  """Captions images (or cached features) with a model from a run directory.

  Args:
    run_dir: str, a training run directory; or a list of two or more, an
      ensemble (``models.ensemble``) searched as one model, whose runs
      trained on the same cached features and vocabulary. ``model`` is
      then the first run's, ``members`` all of them.
    which: "best" (best validation BLEU-4; CIDEr-D for SCST runs) or
      "latest" checkpoint.
    with_encoder: bool. Build the image encoder (needed for image input;
      an ensemble's is its first run's).
    allow_unk: bool. Let captions contain ``<unk>`` (banned by default).
    overrides: "a.b=value" changes of the run's config (see
      ``runs.TrainedModel``).
  """

  def __init__(self, run_dir, which="best", with_encoder=True,
               allow_unk=False, overrides=()):
    directories = [run_dir] if isinstance(run_dir, (str, os.PathLike)) \
        else list(run_dir)
    if len(directories) > 1:
      runs.check_ensemble(directories, overrides)
    # The members share the encoder: the first run's encodes the images.
    self.members = [runs.TrainedModel(d, which, with_encoder and not i,
                                      overrides)
                    for i, d in enumerate(directories)]
    self.model = self.members[0]
    self.decoder = self.model.decoder if len(self.members) == 1 else \
        Ensemble([m.decoder for m in self.members])
    # What the searches run: with the inference-only speed-ups.
    self.searched = word_inputs.for_inference(self.decoder)
    self.vocab = self.model.vocab
    self.image_size = runs.image_size(self.model.config)
    self.tokens = self.vocab.special_tokens(ban_unknown=not allow_unk)
    self.bad_ending_ids = self.vocab.ids_of(vocabulary.BAD_ENDINGS)
    self.encode = encoder_fn(self.decoder)
    self._searches = {}

  def _search_fn(self, method, beam_size, max_length, temperature, top_k,
                 options):
    key = (method, beam_size, max_length, temperature, top_k,
           tuple(sorted(options.items())))
    if key not in self._searches:
      options = dict(options)
      if options.pop("no_bad_endings", False):
        options["bad_ending_ids"] = self.bad_ending_ids
      if method == "beam":
        run = lambda f: search.beam_search(  # noqa: E731
            self.searched, f, beam_size, max_length, top_k=top_k,
            tokens=self.tokens, **options)
      elif method == "greedy":
        run = lambda f: search.greedy(  # noqa: E731
            self.searched, f, max_length, tokens=self.tokens, **options)
      else:
        run = lambda f: search.sample(  # noqa: E731
            self.searched, f, max_length, temperature, top_k=top_k or 0,
            tokens=self.tokens, **options)
      # Without AutoGraph (the search is written in graph ops) a bad option
      # raises its own one-line ValueError while tracing.
      self._searches[key] = tf.function(run, reduce_retracing=True,
                                        autograph=False)
    return self._searches[key]

  def search(self, features, method="beam", beam_size=3, max_length=20,
             temperature=1.0, top_k=None, **options):
    """SearchResult for float32 features [B, D] or [B, L, D].

    ``options``: for every method min_length, no_bad_endings (bool: the
    vocabulary's ``BAD_ENDINGS``), no_repeat_ngram_size and
    repetition_penalty; for beam search length_penalty,
    length_normalization, diversity_groups and diversity_strength; for
    sampling top_p (see ``im2txt_ext.search``). Those not given take
    ``decoding.DEFAULTS``.
    """
    decoding.check_options(method, options)
    options = {**decoding.defaults_of(method), **options}
    try:  # One-line errors, not TensorFlow's.
      if method == "beam":
        search._check(beam_size, max_length, top_k, search.emitted_words(
            self.decoder, self.tokens), search.longest_caption(self.decoder))
      else:
        search._check(1, max_length,
                      longest=search.longest_caption(self.decoder))
      fn = self._search_fn(method, beam_size, max_length, temperature, top_k,
                           options)
      return fn(tf.convert_to_tensor(features, tf.float32))
    except ValueError as e:
      raise InputError(str(e)) from None

  def encode_images(self, images):
    """float32 images [B, S, S, 3] in 0..255 -> features."""
    if self.decoder.encoder is None:
      raise InputError("this captioner was built without an image encoder")
    return self.encode({"image": images})

  def load_images(self, paths):
    """Decodes and resizes image files; bad files raise InputError."""
    return self.decode_images([read_image_bytes(p) for p in paths])

  def decode_images(self, encoded):
    """Encoded images (list of bytes) -> float32 [B, S, S, 3] in 0..255."""
    return tf.stack([pipeline.decode_image(data, self.image_size)
                     for data in encoded])

  def to_captions(self, result):
    """SearchResult -> list (per image) of list of {caption, log_prob,...}."""
    out = []
    for b in range(result.ids.shape[0]):
      options = []
      for k in range(result.ids.shape[1]):
        words = self.vocab.decode(result.ids[b, k].numpy())
        option = {"caption": " ".join(words),
                  "log_prob": float(result.log_probs[b, k]),
                  "score": float(result.scores[b, k])}
        if result.attention is not None:
          option["attention"] = result.attention[b, k, :len(words) + 1] \
              .numpy().round(4).tolist()
        options.append(option)
      out.append(options)
    return out

  def caption_files(self, paths, batch_size=32, **search_args):
    """Captions for image files: one dict per image, best caption first."""
    results = []
    for i in range(0, len(paths), batch_size):
      chunk = paths[i:i + batch_size]
      features = self.encode_images(self.load_images(chunk))
      for path, options in zip(chunk, self.to_captions(
          self.search(features, **search_args))):
        results.append({"image": path, "caption": options[0]["caption"],
                        "log_prob": options[0]["log_prob"],
                        "captions": options})
    return results

  def reference_batches(self, records, features=None, batch_size=64):
    """Teacher-forcing batches of the records' reference captions (for
    ``perplexity``), with images or cached features."""
    config = pipeline.PipelineConfig(
        batch_size=batch_size, image_size=self.image_size,
        max_caption_length=self.model.config.data.max_caption_length)
    examples = pipeline.from_records(records, self.vocab,
                                     read_images=features is None)
    for batch in pipeline.batched(examples, config, training=False,
                                  features=features):
      yield features.attach(batch) if features is not None else batch

  def caption_records(self, records, features=None, batch_size=64,
                      **search_args):
    """Best caption per record {image_id: str}; see ``caption_records``.
    A beam search returns only its best caption, so it may stop early."""
    if search_args.get("method", "beam") == "beam":
      search_args.setdefault("top_k", 1)
    return caption_records(
        self.encode, self.vocab, records, self.image_size,
        lambda f: self.search(f, **search_args), features, batch_size)


def encoder_fn(decoder):
  """batch -> ``decoder.encode(batch)`` at inference, with the image encoder
  traced into a graph: called eagerly, a Keras functional model keeps every
  layer's output until it returns (EfficientNet-Lite0 on 16 photos at 448
  px: 5.9 GB resident against 1.4 GB traced, and 6 times slower)."""
  encode_images = tf.function(
      lambda images: decoder.encode({"image": images}, training=False),
      reduce_retracing=True)

  def encode(batch):
    if "features" in batch or decoder.encoder is None:
      return decoder.encode(batch, training=False)
    return encode_images(batch["image"])
  return encode


def caption_records(encode, vocab, records, image_size, search_fn,
                    features=None, batch_size=64):
  """Best caption {image_id: str} for each record's image.

  Args:
    encode: batch -> features (``encoder_fn`` of a CaptionDecoder with an
      encoder unless ``features`` is given).
    vocab: Vocabulary.
    records: list of CaptionRecord.
    image_size: int. Encoder input side, px.
    search_fn: features -> SearchResult (e.g. a compiled greedy search).
    features: optional FeatureLookup of cached features.
  """
  captions = {}
  for batch in pipeline.image_batches(records, image_size, batch_size,
                                      features):
    batch = features.attach(batch) if features is not None else batch
    result = search_fn(encode(batch))
    for image_id, ids in zip(batch["image_id"].numpy(),
                             result.ids[:, 0].numpy()):
      captions[image_id.decode()] = " ".join(vocab.decode(ids))
  return captions

