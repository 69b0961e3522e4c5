"""Runs an encoder once over a dataset's images and caches the features.

The cache is a float16 ``.npy`` file, written through a memory map, with a
JSON index beside it (same name, ``.json``): the image ids in row order, the
encoder, the kind of feature, the array shape, the rows done and the rows
skipped. Rows are flushed and the index replaced atomically after every
batch, so a killed run resumes where it stopped.

Shapes: N images, S image side, L locations, D channels; rows are [N, D]
("pooled") or [N, L, D] ("spatial").
"""

import os
import time

import numpy as np
import tensorflow as tf
import tqdm

from im2txt_ext.data import pipeline
from im2txt_ext.encoders.feature_index import (index_path, read_index,
                                               write_index)
from im2txt_ext.encoders.specs import OUTPUTS
from im2txt_ext.errors import InputError


def load_image(path, image_size):
  """Reads an image file as float32 RGB [S, S, 3] in 0..255 (see
  ``pipeline.decode_image``: the one decoder of the library)."""
  return pipeline.decode_image(tf.io.read_file(path), image_size)


def image_dataset(paths, image_size, batch_size, first_row=0):
  """Batches of (rows int64 [B], images float32 [B, S, S, 3]) in file order.

  Files that cannot be read or decoded are dropped: their rows are missing
  from the batches.
  """
  rows = np.arange(first_row, first_row + len(paths), dtype=np.int64)
  dataset = tf.data.Dataset.from_tensor_slices((rows, list(paths)))
  dataset = dataset.map(lambda row, path: (row, load_image(path, image_size)),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.ignore_errors()
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _bad_image_error(record):
  problem = ("no such file" if not os.path.exists(record.image_path)
             else "cannot be decoded as an image")
  return InputError(f"{problem} (image {record.image_id}; skip_bad_images "
                    "skips such files)", record.image_path)


def _open_cache(output, index):
  """Opens the memory map and the index to resume, or starts new ones."""
  shape = tuple(index["shape"])
  old = None
  if os.path.exists(index_path(output)) and os.path.exists(output):
    old = read_index(output)
  if old is not None:
    for key in ("encoder", "image_size", "kind", "shape", "image_ids",
                "metadata"):
      if old.get(key) != index[key]:
        raise InputError(f"holds features of another run (its {key} "
                         "differs); remove it or choose another output",
                         output)
    return np.lib.format.open_memmap(output, mode="r+"), old
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  array = np.lib.format.open_memmap(output, mode="w+", dtype=np.float16,
                                    shape=shape)
  write_index(index_path(output), index)
  return array, index


def extract_features(records, encoder, output, kind="pooled", batch_size=32,
                     skip_bad_images=False, metadata=None, max_batches=None,
                     progress=True):
  """Encodes the images of `records` into a resumable float16 cache.

  Args:
    records: list of CaptionRecord. One row per record, in this order.
    encoder: keras.Model. From `build_encoder`: images [B, S, S, 3] in 0..255
      to {"pooled": [B, D], "spatial": [B, L, D]}; its name is recorded.
    output: str. Path of the ``.npy`` file; the index goes beside it.
    kind: str. "pooled" or "spatial". Defaults to "pooled".
    batch_size: int. Images per encoder call. Defaults to 32.
    skip_bad_images: bool. Whether missing or corrupt image files leave a
      zero row, listed in the index's "skipped", instead of an InputError.
      Defaults to False.
    metadata: dict or None. JSON values stored in the index (e.g. the
      weights); resuming requires the same. Defaults to None.
    max_batches: int or None. Stop after this many batches (the run can be
      resumed later). Defaults to None, all.
    progress: bool. Whether to show a progress bar. Defaults to True.

  Returns:
    A dict with "rows" (N), "rows_done", "skipped" (row numbers), "encoded"
    (images encoded by this call), "seconds" and "images_per_second".
  """
  if kind not in OUTPUTS:
    raise InputError(f"unknown feature kind {kind!r}; choose pooled or "
                     "spatial")
  if not output.endswith(".npy"):
    raise InputError("the features file name must end in .npy", output)
  if batch_size < 1:
    raise InputError(f"batch size must be positive, got {batch_size}")
  if not records:
    raise InputError("no images to encode")
  row_shape = tuple(encoder.output[kind].shape[1:])
  array, index = _open_cache(output, {
      "encoder": encoder.name,
      "image_size": encoder.input_shape[1],
      "kind": kind,
      "shape": [len(records), *row_shape],
      "dtype": "float16",
      "image_ids": [r.image_id for r in records],
      "metadata": metadata or {},
      "rows_done": 0,
      "skipped": [],
  })

  @tf.function(reduce_retracing=True)
  def encode(images):
    return encoder(images, training=False)[kind]

  def commit(done, bad):
    """Marks rows up to `done` finished, `bad` ones skipped, on disk."""
    if bad and not skip_bad_images:
      raise _bad_image_error(records[bad[0]])
    array[bad] = 0
    array.flush()
    index["skipped"] += bad
    index["rows_done"] = done
    write_index(index_path(output), index)

  start = index["rows_done"]
  skipped_before = len(index["skipped"])
  started = time.perf_counter()
  with tqdm.tqdm(total=len(records), initial=start, unit="img",
                 disable=not progress) as bar:
    if start < len(records):
      dataset = image_dataset([r.image_path for r in records[start:]],
                              index["image_size"], batch_size, start)
      for batch, (rows, images) in enumerate(dataset, 1):
        rows = rows.numpy()
        done = int(rows[-1]) + 1
        bad = sorted(set(range(index["rows_done"], done)) - set(rows.tolist()))
        array[rows] = encode(images).numpy().astype(np.float16)
        commit(done, bad)
        bar.update(done - bar.n)
        if batch == max_batches:
          break
      else:
        commit(len(records), list(range(index["rows_done"], len(records))))
        bar.update(len(records) - bar.n)
  seconds = time.perf_counter() - started
  encoded = (index["rows_done"] - start
             - (len(index["skipped"]) - skipped_before))
  return {
      "rows": len(records),
      "rows_done": index["rows_done"],
      "skipped": index["skipped"],
      "encoded": encoded,
      "seconds": seconds,
      "images_per_second": encoded / seconds if seconds > 0 else 0.0,
  }


def pool_features(spatial, output):
  """Writes the pooled features of a finished spatial cache without encoding
  the images again: each row's mean over its locations, which is what every
  encoder's pooled output is (the global average of the map that its
  spatial output flattens), float16 rounding apart.

  Args:
    spatial: str. A finished spatial features file (``.npy``).
    output: str. Path of the pooled ``.npy`` file; the index goes beside it,
      written last, so that an interrupted call leaves no finished cache.

  Returns:
    The pooled cache's index: the spatial one's, with kind "pooled", its
    shape and "pooled_from".
  """
  index = read_index(spatial)
  if index["kind"] != "spatial":
    raise InputError(f"holds {index['kind']} features, not spatial ones",
                     spatial)
  if not output.endswith(".npy"):
    raise InputError("the features file name must end in .npy", output)
  _, maps = load_features(spatial)
  index = dict(index, kind="pooled", shape=[maps.shape[0], maps.shape[2]],
               pooled_from=spatial)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  array = np.lib.format.open_memmap(output, mode="w+", dtype=np.float16,
                                    shape=tuple(index["shape"]))
  for start in range(0, len(maps), 1024):
    array[start:start + 1024] = maps[start:start + 1024].astype(
        np.float32).mean(axis=1)
  array.flush()
  write_index(index_path(output), index)
  return index


def load_features(path):
  """Loads a finished features cache.

  Args:
    path: str. The ``.npy`` file (or its ``.json`` index).

  Returns:
    (image_ids, array): list of str, and a read-only memory-mapped float16
    array [N, D] or [N, L, D]; rows listed in the index's "skipped" are zero.
  """
  index = read_index(path)
  npy = os.path.splitext(path)[0] + ".npy"
  if index["rows_done"] < len(index["image_ids"]):
    raise InputError(f"features are incomplete ({index['rows_done']} of "
                     f"{len(index['image_ids'])} rows); rerun the extraction "
                     "to resume it", npy)
  try:
    array = np.load(npy, mmap_mode="r")
  except (OSError, ValueError) as e:
    raise InputError(f"cannot read features ({e})", npy) from e
  if list(array.shape) != index["shape"]:
    raise InputError(f"array shape {array.shape} differs from its index",
                     npy)
  return index["image_ids"], array
