"""im2txt-style preprocessing into sharded TFRecord SequenceExamples.

One SequenceExample per (image, caption), as in im2txt's
``build_mscoco_data.py``:
  context  ``image/image_id``: bytes, ``image/data``: the encoded image bytes
  features ``image/caption_ids``: one int64 per token, with <start>/<end>.

Shards are written in parallel worker processes, each to a temporary file
renamed when complete, so an interrupted run leaves no half-written shard.
"""

import concurrent.futures
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image
from tqdm import tqdm

from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.errors import InputError

IMAGE_ID_KEY = "image/image_id"
IMAGE_DATA_KEY = "image/data"
CAPTION_IDS_KEY = "image/caption_ids"


def read_image_bytes(path):
  """Returns the file's bytes after checking that it decodes as an image.

  Raises InputError naming the file when it is missing, truncated or not an
  image, so that a bad file never reaches TensorFlow's decoder.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise InputError(f"cannot read image ({e.strerror})", path) from None
  return check_image_bytes(data, path)


def check_image_bytes(data, name):
  """Returns encoded image bytes after checking that they decode as a JPEG,
  PNG, BMP or GIF that TensorFlow reads; InputError naming ``name`` (a path,
  or e.g. "image 2") otherwise."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format not in ("JPEG", "PNG", "BMP", "GIF"):
        raise InputError(f"unsupported image format {image.format}", name)
      image.load()  # Decodes fully: catches truncated files, not only headers.
      if image.format == "BMP" and image.mode in ("1", "P"):
        # TensorFlow decodes 8-bit grey and 24- or 32-bit colour BMP only.
        raise InputError("1-bit or palette BMP: save it as 24-bit colour",
                         name)
  except InputError:
    raise
  except Image.UnidentifiedImageError:
    raise InputError("corrupt or truncated image (not an image file)",
                     name) from None
  except Exception as e:  # PIL raises many types for corrupt data.
    raise InputError(f"corrupt or truncated image ({e})", name) from None
  return data


def make_sequence_example(image_id, image_bytes, caption_ids):
  context = tf.train.Features(feature={
      IMAGE_ID_KEY: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[image_id.encode()])),
      IMAGE_DATA_KEY: tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[image_bytes])),
  })
  feature_lists = tf.train.FeatureLists(feature_list={
      CAPTION_IDS_KEY: tf.train.FeatureList(feature=[
          tf.train.Feature(int64_list=tf.train.Int64List(value=[int(i)]))
          for i in caption_ids]),
  })
  return tf.train.SequenceExample(context=context, feature_lists=feature_lists)


def _write_shard(path, records, vocab, skip_bad_images):
  """Writes one shard; returns (examples written, bad image paths)."""
  written, bad = 0, []
  tmp = path + ".tmp"
  with tf.io.TFRecordWriter(tmp) as writer:
    for record in records:
      try:
        data = read_image_bytes(record.image_path)
      except InputError:
        if not skip_bad_images:
          raise
        bad.append(record.image_path)
        continue
      for caption in record.captions:
        ids = vocab.encode(tokenize(caption))
        writer.write(make_sequence_example(record.image_id, data, ids)
                     .SerializeToString())
        written += 1
  os.replace(tmp, path)
  return written, bad


def write_tfrecords(records, vocab, output_prefix, num_shards=8,
                    num_workers=None, skip_bad_images=False, seed=0):
  """Writes records as ``{output_prefix}-SSSSS-of-NNNNN`` shards.

  Images are shuffled across shards (seeded) so that each shard is a fair
  sample, as im2txt does. Returns (shard paths, examples written, bad images).
  """
  if not records:
    raise InputError("no records to write", output_prefix)
  os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
  order = np.random.default_rng(seed).permutation(len(records))
  num_shards = max(1, min(num_shards, len(records)))
  chunks = np.array_split(order, num_shards)
  paths = [f"{output_prefix}-{i:05d}-of-{num_shards:05d}"
           for i in range(num_shards)]
  num_workers = num_workers or min(num_shards, os.cpu_count() or 1)
  total, bad = 0, []
  with concurrent.futures.ProcessPoolExecutor(num_workers) as pool:
    futures = [pool.submit(_write_shard, path, [records[i] for i in chunk],
                           vocab, skip_bad_images)
               for path, chunk in zip(paths, chunks)]
    shard_sizes = {future: len(chunk) for future, chunk in zip(futures, chunks)}
    with tqdm(total=len(records), desc=os.path.basename(output_prefix),
              unit="img") as bar:
      for future in concurrent.futures.as_completed(futures):
        written, shard_bad = future.result()
        total += written
        bad.extend(shard_bad)
        bar.update(shard_sizes[future])
  return paths, total, bad


def parse_sequence_example(serialized):
  """Parses one SequenceExample into (image_id, image bytes, caption ids)."""
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
          IMAGE_DATA_KEY: tf.io.FixedLenFeature([], tf.string),
      },
      sequence_features={
          CAPTION_IDS_KEY: tf.io.FixedLenSequenceFeature([], tf.int64),
      })
  return (context[IMAGE_ID_KEY], context[IMAGE_DATA_KEY],
          tf.cast(sequence[CAPTION_IDS_KEY], tf.int32))
