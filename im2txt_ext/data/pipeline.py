"""The tf.data input pipeline shared by every model.

Examples come from TFRecord shards (``from_tfrecords``) or from in-memory
CaptionRecords (``from_records``); either way each element is one
(image, caption) pair. ``batched`` then decodes and resizes images in
parallel (or looks up cached CNN features instead), splits each caption into
decoder input and target as im2txt does, pads with masks, buckets by length,
shuffles and prefetches.

Batch elements are dicts (shape letters: B batch, T caption length,
S image side, D channels, L locations):
  image: float32 [B, S, S, 3], RGB in 0..255 (when reading images), or
  feature_row: int64 [B] (when reading cached features; ``FeatureLookup.
    attach`` turns it into ``features`` float32 [B, D] or [B, L, D]);
  image_id: string [B];
  input_ids: int32 [B, T], the caption from <start>, without <end>;
  target_ids: int32 [B, T], the caption shifted by one: the words to predict;
  mask: float32 [B, T], 1 on real target words (including <end>), 0 on pad.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from im2txt_ext.data import tfrecords
from im2txt_ext.data.tokenizer import tokenize

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class PipelineConfig:
  batch_size: int = 64  # Global batch size, in captions.
  image_size: int = 224  # Side of the square images fed to the encoder, px.
  max_caption_length: int = 30  # Words kept per caption (longer ones cut).
  shuffle_buffer: int = 4096  # Examples in the shuffle buffer.
  bucket_boundaries: tuple = (10, 15, 20)  # Lengths where buckets split.
  augment: bool = False  # Random crop and brightness/contrast (no flip: it
  #                        would swap "left" and "right" in the captions).
  seed: int = 0  # Seed of shuffling and augmentation.


def from_tfrecords(file_pattern):
  """Dataset of {image_id, image_bytes, caption_ids} from TFRecord shards."""
  files = tf.data.Dataset.list_files(file_pattern, shuffle=False)
  ds = files.interleave(tf.data.TFRecordDataset, cycle_length=4,
                        num_parallel_calls=AUTOTUNE, deterministic=True)

  def parse(serialized):
    image_id, image_bytes, caption_ids = \
        tfrecords.parse_sequence_example(serialized)
    return {"image_id": image_id, "image_bytes": image_bytes,
            "caption_ids": caption_ids}
  return ds.map(parse, num_parallel_calls=AUTOTUNE)


def from_records(records, vocab, read_images=True):
  """Dataset of {image_id, image_path, caption_ids}, one per caption."""
  image_ids, paths, captions = [], [], []
  for record in records:
    for caption in record.captions:
      image_ids.append(record.image_id)
      paths.append(record.image_path)
      captions.append(vocab.encode(tokenize(caption)))
  ragged = tf.ragged.constant(captions, dtype=tf.int32) if captions else \
      tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32), [])
  return tf.data.Dataset.from_tensor_slices(
      {"image_id": image_ids, "caption_ids": ragged,
       **({"image_path": paths} if read_images else {})})


def images_of(records):
  """Dataset of {image_id, image_path}, one per image (for captioning)."""
  return tf.data.Dataset.from_tensor_slices(
      {"image_id": [r.image_id for r in records],
       "image_path": [r.image_path for r in records]})


def decode_image(image_bytes, image_size):
  """Encoded JPEG/PNG bytes -> float32 [S, S, 3] RGB in 0..255.

  Resized bilinearly to S x S (squashed, aspect ratio not kept). JPEGs are
  decoded with the accurate integer DCT, as PIL does: TensorFlow's default
  differs by up to 8 grey levels, enough to change a pretrained CNN's top-5.
  """
  image = tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.io.decode_jpeg(image_bytes, channels=3,
                                dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_image(image_bytes, channels=3,
                                 expand_animations=False))
  image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])
  return tf.clip_by_value(image, 0.0, 255.0)


def augment_image(image, seed):
  """Random crop of 85-100% of the side, resized back, brightness/contrast.

  Args:
    image: float32 [S, S, 3].
    seed: int [2]. Split into one independent seed per draw.
  """
  size = tf.shape(image)[0]
  scale_seed, crop_seed, brightness_seed, contrast_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  scale = tf.random.stateless_uniform([], scale_seed, 0.85, 1.0)
  crop = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
  image = tf.image.stateless_random_crop(image, [crop, crop, 3], crop_seed)
  image = tf.image.resize(image, [size, size])
  image = tf.image.stateless_random_brightness(image, 20.0, brightness_seed)
  image = tf.image.stateless_random_contrast(image, 0.8, 1.2, contrast_seed)
  return tf.clip_by_value(image, 0.0, 255.0)


def split_caption(caption_ids, max_length):
  """im2txt's input/target split: input = c[:-1], target = c[1:].

  Captions are cut to ``max_length`` words (plus <start>/<end>), keeping the
  final <end> so the model still learns to stop.
  """
  length = tf.minimum(tf.shape(caption_ids)[0], max_length + 2)
  caption_ids = tf.concat([caption_ids[:length - 1], caption_ids[-1:]], 0)
  return caption_ids[:-1], caption_ids[1:]


class FeatureLookup:
  """Cached CNN features looked up by image id.

  The pipeline carries only each example's row number (``feature_row``);
  ``attach`` gathers the rows inside the training or search step, so the
  features sit once in device memory (float16) and the input pipeline stays
  small and checkpointable.

  Args:
    image_ids: list of str, the id of each row of ``features``.
    features: array [N, D] or [N, L, D] (a float16 memmap is fine).
  """

  def __init__(self, image_ids, features, chunk_bytes=64 << 20):
    # Filled in place a chunk of rows at a time: converting the whole array
    # at once holds two copies at its peak (8 GB for 3.8 GB of features,
    # enough to run a machine of side-by-side trainings out of memory).
    shape = tuple(features.shape)
    self.values = tf.Variable(lambda: tf.zeros(shape, tf.float16),
                              trainable=False, name="cached_features")
    rows = max(1, chunk_bytes // (2 * int(np.prod(shape[1:]))))
    for start in range(0, shape[0], rows):
      stop = min(start + rows, shape[0])
      self.values.scatter_update(tf.IndexedSlices(
          tf.constant(np.asarray(features[start:stop], np.float16)),
          tf.range(start, stop)))
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(image_ids)), tf.range(len(image_ids),
                                                   dtype=tf.int64)), -1)

  @property
  def feature_shape(self):
    return tuple(self.values.shape[1:])

  def rows(self, image_ids):
    rows = self.table.lookup(image_ids)
    tf.debugging.assert_non_negative(
        rows, message="image id has no cached features")
    return rows

  def attach(self, batch):
    """Replaces ``feature_row`` int64 [B] by ``features`` float32 [B, ...]."""
    if "feature_row" not in batch:
      return batch
    batch = dict(batch)
    batch["features"] = tf.cast(tf.gather(self.values,
                                          batch.pop("feature_row")),
                                tf.float32)
    return batch


def batched(examples, config, training, features=None, drop_remainder=False):
  """Turns an example dataset into padded, bucketed, prefetched batches.

  Args:
    examples: dataset from ``from_tfrecords`` or ``from_records``.
    config: PipelineConfig.
    training: bool. Shuffles (repeatable from the seed), repeats forever and
      augments: each element's distortion is seeded by (config.seed, its
      position in the stream), so an image gets a new one every time it is
      read (each epoch, each caption), and a resumed stream the same ones.
    features: optional FeatureLookup; when given, batches carry
      ``feature_row`` (for ``features.attach``) instead of decoded images.
    drop_remainder: bool. Keep every batch the same size (for distribution).
  """
  if training:
    examples = examples.shuffle(config.shuffle_buffer, seed=config.seed,
                                reshuffle_each_iteration=True).repeat()
  augment = training and config.augment and features is None

  def prepare(example, position=None):
    input_ids, target_ids = split_caption(example["caption_ids"],
                                          config.max_caption_length)
    out = {"image_id": example["image_id"], "input_ids": input_ids,
           "target_ids": target_ids,
           "mask": tf.ones_like(target_ids, tf.float32)}
    if features is not None:
      out["feature_row"] = features.rows(example["image_id"])
      return out
    data = example["image_bytes"] if "image_bytes" in example else \
        tf.io.read_file(example["image_path"])
    image = decode_image(data, config.image_size)
    if augment:
      image = augment_image(image, tf.stack([tf.cast(config.seed, tf.int64),
                                             position]))
    out["image"] = image
    return out

  # Deterministic order even in parallel, so a resumed run sees the same data.
  in_order = dict(num_parallel_calls=AUTOTUNE, deterministic=True)
  if augment:  # The position is part of the iterator's checkpointed state.
    ds = examples.enumerate().map(lambda position, example: prepare(
        example, position), **in_order)
  else:
    ds = examples.map(prepare, **in_order)
  ds = ds.bucket_by_sequence_length(
      lambda x: tf.shape(x["input_ids"])[0],
      bucket_boundaries=list(config.bucket_boundaries),
      bucket_batch_sizes=[config.batch_size] * (len(config.bucket_boundaries)
                                                + 1),
      drop_remainder=drop_remainder)
  return ds.prefetch(AUTOTUNE)


def image_batches(records, image_size, batch_size, features=None):
  """Batches of {image_id, image | feature_row}, one entry per image."""
  ds = images_of(records)
  if features is not None:
    ds = ds.batch(batch_size).map(lambda x: {
        "image_id": x["image_id"], "feature_row": features.rows(x["image_id"])})
  else:
    ds = ds.map(lambda x: {"image_id": x["image_id"],
                           "image": decode_image(tf.io.read_file(
                               x["image_path"]), image_size)},
                num_parallel_calls=AUTOTUNE).batch(batch_size)
  return ds.prefetch(AUTOTUNE)
