"""Readers, bad input, vocabulary, scenes, TFRecords and the tf.data
pipeline."""

import json

import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext.data import pipeline, readers, scenes, tfrecords
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.errors import InputError


def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


def _images(tmp_path, names):
  from PIL import Image
  folder = tmp_path / "images"
  folder.mkdir(exist_ok=True)
  for name in names:
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / name)
  return str(folder)


# -- Readers -------------------------------------------------------------------


def test_coco_reader(tmp_path):
  images = _images(tmp_path, ["a.png", "b.png"])
  path = _write(tmp_path / "captions_val2014.json", json.dumps({
      "images": [{"id": 1, "file_name": "a.png"}, {"id": 2,
                                                   "file_name": "b.png"}],
      "annotations": [{"id": 10, "image_id": 1, "caption": "A red dot."},
                      {"id": 11, "image_id": 2, "caption": "A big square"},
                      {"id": 12, "image_id": 1, "caption": "red dot"}]}))
  records = readers.read_dataset(path, images)
  assert [r.image_id for r in records] == ["1", "2"]
  assert records[0].captions == ["A red dot.", "red dot"]
  assert records[0].split == "val"
  assert records[1].image_path.endswith("images/b.png")


def test_flickr_token_reader_with_splits(tmp_path):
  _write(tmp_path / "Flickr8k.token.txt",
         "x.jpg#0\tA dog runs .\nx.jpg#1\tDog running\ny.jpg#0\tA cat .\n")
  _write(tmp_path / "Flickr_8k.trainImages.txt", "x.jpg\n")
  _write(tmp_path / "Flickr_8k.devImages.txt", "y.jpg\n")
  records = readers.read_dataset(str(tmp_path / "Flickr8k.token.txt"))
  assert [(r.image_id, r.split, len(r.captions)) for r in records] == \
      [("x.jpg", "train", 2), ("y.jpg", "val", 1)]


def test_a_missing_image_is_named_with_its_line(tmp_path):
  images = _images(tmp_path, ["x.jpg"])
  path = _write(tmp_path / "Flickr8k.token.txt",
                "x.jpg#0\tA dog runs .\ngone.jpg#0\tA cat .\n")
  with pytest.raises(InputError, match=r"Flickr8k.token.txt:2: image file "
                     "not found: .*gone.jpg"):
    readers.read_dataset(path, images)


def test_captions_csv_reader_keeps_commas(tmp_path):
  path = _write(tmp_path / "captions.txt",
                'image,caption\nx.jpg,"A dog, brown, runs"\nx.jpg,Dog\n')
  records = readers.read_dataset(path)
  assert records[0].captions == ["A dog, brown, runs", "Dog"]


def test_karpathy_reader(tmp_path):
  path = _write(tmp_path / "dataset_flickr8k.json", json.dumps({"images": [
      {"filename": "x.jpg", "imgid": 0, "split": "test",
       "sentences": [{"raw": "A dog .", "tokens": ["a", "dog"]}]},
      {"filename": "y.jpg", "filepath": "val2014", "cocoid": 7,
       "split": "restval", "sentences": [{"tokens": ["a", "cat"]}]}]}))
  records = readers.read_dataset(path)
  assert [(r.image_id, r.image_path, r.split, r.captions) for r in records] \
      == [("0", "x.jpg", "test", ["A dog ."]),
          ("7", "val2014/y.jpg", "restval", ["a cat"])]


def test_reads_real_flickr8k_formats_identically():
  from conftest import SHARED
  folder = SHARED / "data" / "flickr8k"
  if not (folder / "Flickr8k.token.txt").exists():
    pytest.skip(f"Flickr8k not found at {folder} (optional ../shared asset)")
  tokens = readers.read_dataset(str(folder / "Flickr8k.token.txt"))
  csv_records = readers.read_dataset(str(folder / "captions.txt"))
  assert len(tokens) == 8091 and sum(len(r.captions) for r in tokens) == 40455
  assert [r.captions for r in tokens] == [r.captions for r in csv_records]
  assert len(readers.split_records(tokens, "train")) == 6000


# -- Bad input -----------------------------------------------------------------


def test_malformed_json_names_file_and_line(tmp_path):
  path = _write(tmp_path / "captions_train.json", '{"images": [\n  {"id": 1,,}')
  with pytest.raises(InputError, match=r"captions_train.json:2: malformed"):
    readers.read_dataset(path)


def test_malformed_token_line_raise_or_skip(tmp_path):
  path = _write(tmp_path / "Flickr8k.token.txt",
                "x.jpg#0\tA dog .\nbroken line without tab\nx.jpg#1\tDog\n")
  with pytest.raises(InputError, match=r"Flickr8k.token.txt:2: expected"):
    readers.read_dataset(path)
  report = readers.SkipReport()
  records = readers.read_dataset(path, on_error="skip", report=report)
  assert records[0].captions == ["A dog .", "Dog"]
  assert report.total == 1 and "Flickr8k.token.txt:2" in report.summary()


@pytest.mark.parametrize("caption", ["", "   ", " ... !"])
def test_empty_or_punctuation_caption(tmp_path, caption):
  path = _write(tmp_path / "captions.txt",
                f"image,caption\nx.jpg,A dog\nx.jpg,{caption}\n")
  with pytest.raises(InputError, match=r"captions.txt:3: empty caption"):
    readers.read_dataset(path)
  records = readers.read_dataset(path, on_error="skip")
  assert records[0].captions == ["A dog"]


def test_duplicate_ids_and_missing_images(tmp_path):
  images = _images(tmp_path, ["a.png"])
  path = _write(tmp_path / "captions_train.json", json.dumps({
      "images": [{"id": 1, "file_name": "a.png"},
                 {"id": 1, "file_name": "a.png"},
                 {"id": 2, "file_name": "gone.png"}],
      "annotations": [{"id": 5, "image_id": 1, "caption": "a"},
                      {"id": 5, "image_id": 1, "caption": "b"},
                      {"id": 6, "image_id": 2, "caption": "c"},
                      {"id": 7, "image_id": 3, "caption": "d"}]}))
  with pytest.raises(InputError, match="duplicate image id '1'"):
    readers.read_dataset(path, images)
  report = readers.SkipReport()
  records = readers.read_dataset(path, images, on_error="skip", report=report)
  assert [(r.image_id, r.captions) for r in records] == [("1", ["a"])]
  reasons = " ".join(report.counts)
  assert report.total == 4
  for expected in ("duplicate image id", "duplicate annotation id",
                   "unknown image id '3'", "image file not found"):
    assert expected in reasons


_COCO_IMAGE = {"id": 1, "file_name": "a.png"}
_COCO_ANN = {"id": 5, "image_id": 1, "caption": "a dot"}


@pytest.mark.parametrize("data, message", [
    ({"images": 5, "annotations": []}, r"'images' must be a list, got int"),
    ({"images": [], "annotations": {}}, r"'annotations' must be a list, got"),
    ({"images": [{"id": 1, "file_name": None}], "annotations": [_COCO_ANN]},
     r"images\[0\]: 'file_name' must be a string, got null"),
    ({"images": [{"id": [1], "file_name": "a.png"}], "annotations": []},
     r"images\[0\]: 'id' must be a string or an integer, got list of int"),
    ({"images": [7], "annotations": []},
     r"images\[0\]: must be an object, got int"),
    ({"images": [_COCO_IMAGE], "annotations": [{"id": 5, "caption": "a"}]},
     r"annotations\[0\]: lacks 'image_id'"),
    ({"images": [_COCO_IMAGE], "annotations": [{**_COCO_ANN, "caption": 3}]},
     r"annotations\[0\]: 'caption' must be a string, got int"),
    ({"images": [_COCO_IMAGE], "annotations": [{**_COCO_ANN, "id": {}}]},
     r"annotations\[0\]: 'id' must be a string or an integer, got dict"),
])
def test_coco_fields_of_wrong_type(tmp_path, data, message):
  path = _write(tmp_path / "captions_val2014.json", json.dumps(data))
  with pytest.raises(InputError, match=r"captions_val2014.json: " + message):
    readers.read_dataset(path)


@pytest.mark.parametrize("image, message", [
    ({"filename": "x.jpg", "sentences": 7},
     r"images\[0\]: 'sentences' must be a list, got int"),
    ({"filename": "x.jpg", "sentences": [{"tokens": [1, 2]}]},
     r"images\[0\].sentences\[0\]: 'tokens' must be a list of strings, "
     r"got list of int"),
    ({"filename": "x.jpg", "sentences": [{"tokens": "a red circle"}]},
     r"images\[0\].sentences\[0\]: 'tokens' must be a list of strings, "
     r"got str"),
    ({"filename": "x.jpg", "sentences": [{"raw": None}]},
     r"images\[0\].sentences\[0\]: 'raw' must be a string, got null"),
    ({"filename": "x.jpg", "sentences": ["a dog"]},
     r"images\[0\].sentences\[0\]: must be an object, got str"),
    ({"filename": 3, "sentences": []},
     r"images\[0\]: 'filename' must be a string, got int"),
    ({"filename": "x.jpg", "split": ["train"], "sentences": []},
     r"images\[0\]: 'split' must be a string, got list of str"),
])
def test_karpathy_fields_of_wrong_type(tmp_path, image, message):
  path = _write(tmp_path / "dataset_flickr8k.json",
                json.dumps({"images": [image]}))
  with pytest.raises(InputError, match=r"dataset_flickr8k.json: " + message):
    readers.read_dataset(path)


def test_karpathy_images_not_a_list(tmp_path):
  path = _write(tmp_path / "dataset_flickr8k.json", '{"images": 5}')
  with pytest.raises(InputError, match=r"dataset_flickr8k.json: 'images' "
                     r"must be a list, got int"):
    readers.read_dataset(path)


def test_skip_leaves_out_fields_of_wrong_type(tmp_path):
  path = _write(tmp_path / "dataset_flickr8k.json", json.dumps({"images": [
      {"filename": "x.jpg", "sentences": [{"tokens": "a red circle"},
                                          {"raw": "A dog ."}]},
      {"filename": "y.jpg", "sentences": 7}]}))
  report = readers.SkipReport()
  records = readers.read_dataset(path, on_error="skip", report=report)
  assert [(r.image_id, r.captions) for r in records] == [("x.jpg",
                                                          ["A dog ."])]
  assert report.total == 2


@pytest.mark.parametrize("name, text", [
    ("Flickr8k.token.txt", b"x.jpg#0\tA dog .\nx.jpg#1\tA \xff dog\n"),
    ("captions.txt", b"image,caption\nx.jpg,A \xff dog\n"),
    ("captions_val2014.json", b'{"images": [],\n"annotations": ["\xff"]}'),
])
def test_non_utf8_caption_files(tmp_path, name, text):
  (tmp_path / name).write_bytes(text)
  offset = text.index(b"\xff")
  with pytest.raises(InputError, match=rf"{name}:2: not UTF-8 text \(byte "
                     rf"0xff at offset {offset}\)"):
    readers.read_dataset(str(tmp_path / name))


def test_non_utf8_flickr_split_file(tmp_path):
  path = _write(tmp_path / "Flickr8k.token.txt", "x.jpg#0\tA dog .\n")
  (tmp_path / "Flickr_8k.trainImages.txt").write_bytes(b"\xfe.jpg\n")
  with pytest.raises(InputError, match=r"Flickr_8k.trainImages.txt:1: not "
                     r"UTF-8"):
    readers.read_dataset(path)


def test_byte_order_mark_is_ignored(tmp_path):
  path = tmp_path / "captions.txt"
  path.write_bytes(b"\xef\xbb\xbfimage,caption\nx.jpg,A dog\n")
  assert readers.read_dataset(str(path))[0].captions == ["A dog"]


def test_unknown_format_and_missing_file(tmp_path):
  with pytest.raises(InputError, match="caption file not found"):
    readers.read_dataset(str(tmp_path / "nope.json"))
  path = _write(tmp_path / "notes.txt", "just some text\n")
  with pytest.raises(InputError, match="unknown caption file format"):
    readers.read_dataset(path)


def test_corrupt_and_truncated_images_are_named(tmp_path):
  from PIL import Image
  good = tmp_path / "good.jpg"
  Image.new("RGB", (64, 64), (1, 2, 3)).save(good, quality=90)
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(good.read_bytes()[:200])
  garbage = tmp_path / "garbage.png"
  garbage.write_bytes(b"not an image at all")
  assert tfrecords.read_image_bytes(str(good))[:2] == b"\xff\xd8"
  for bad in (truncated, garbage, tmp_path / "missing.jpg"):
    with pytest.raises(InputError, match=bad.name):
      tfrecords.read_image_bytes(str(bad))
  with pytest.raises(InputError, match="garbage.png: corrupt or truncated "
                     r"image \(not an image file\)$"):
    tfrecords.read_image_bytes(str(garbage))


def test_bmp_files_tensorflow_cannot_decode_are_refused(tmp_path):
  """TensorFlow decodes 8-bit grey and 24/32-bit BMP, not 1-bit or palette
  files, which PIL reads: they are refused before they reach it."""
  from PIL import Image
  grey = Image.new("L", (8, 8), 7)
  colour = Image.new("RGB", (8, 8), (200, 30, 10))
  for mode, image in (("1", grey), ("P", colour)):
    path = tmp_path / f"{mode}.bmp"
    image.convert(mode).save(path)
    with pytest.raises(InputError, match=f"{mode}.bmp: 1-bit or palette BMP"):
      tfrecords.read_image_bytes(str(path))
  for mode in ("L", "RGB"):
    path = tmp_path / f"{mode}.bmp"
    grey.convert(mode).save(path)
    data = tfrecords.read_image_bytes(str(path))
    assert tf.io.decode_image(data, channels=3).shape == (8, 8, 3)


# -- Tokenizer and vocabulary --------------------------------------------------


def test_tokenize():
  assert tokenize("A man's RED T-shirt, on a bench...") == \
      ["a", "man's", "red", "t-shirt", "on", "a", "bench"]
  assert tokenize(" ?! ") == []


def test_vocabulary_round_trip(tmp_path):
  vocab = Vocabulary.build([["a", "dog"], ["a", "cat"], ["a", "dog"]],
                           min_count=2)
  assert vocab.words == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]
  assert vocab.encode(["a", "cat"]) == [1, 4, 3, 2]
  assert vocab.decode([1, 4, 5, 2, 4]) == ["a", "dog"]
  vocab.save(str(tmp_path / "vocab.txt"))
  loaded = Vocabulary.load(str(tmp_path / "vocab.txt"))
  assert loaded.words == vocab.words and loaded.counts == vocab.counts


def test_vocabulary_bad_file(tmp_path):
  path = _write(tmp_path / "vocab.txt", "<pad>\t0\nno count here\n")
  with pytest.raises(InputError, match="vocab.txt:2"):
    Vocabulary.load(path)


# -- Scenes --------------------------------------------------------------------


def test_scenes_deterministic_and_readable(tmp_path):
  a = scenes.generate(str(tmp_path / "a"), 5, 2, 2, seed=3, image_size=32)
  b = scenes.generate(str(tmp_path / "b"), 5, 2, 2, seed=3, image_size=32)
  for split in a:
    with open(a[split]) as fa, open(b[split]) as fb:
      assert fa.read() == fb.read()
  assert (tmp_path / "a/images/scene_000000.png").read_bytes() == \
      (tmp_path / "b/images/scene_000000.png").read_bytes()
  records = readers.read_dataset(a["train"], str(tmp_path / "a/images"))
  assert len(records) == 5 and all(len(r.captions) == 5 for r in records)
  assert records[0].split == "train"


def test_scene_captions_follow_positions():
  rng = np.random.default_rng(0)
  for _ in range(20):
    image, captions = scenes.render_scene(rng, 64)
    relation = next(r for r in scenes.RELATIONS if f" {r} a " in captions[1])
    first_colour = captions[1].split()[1]
    pixels = np.asarray(image).astype(int)
    colour = np.array(scenes.COLOURS[first_colour])
    ys, xs = np.nonzero(np.abs(pixels - colour).sum(-1) < 30)
    other = captions[1].split(f" {relation} a ")[1].split()[0]
    oys, oxs = np.nonzero(np.abs(pixels - np.array(
        scenes.COLOURS[other])).sum(-1) < 30)
    if first_colour == other:
      continue
    if relation == "above":
      assert ys.mean() < oys.mean()
    elif relation == "below":
      assert ys.mean() > oys.mean()
    elif relation == "to the left of":
      assert xs.mean() < oxs.mean()
    else:
      assert xs.mean() > oxs.mean()


# -- TFRecords and pipeline ----------------------------------------------------


def _vocab(records):
  return Vocabulary.build(tokenize(c) for r in records for c in r.captions)


def test_tfrecord_round_trip(scene_data, tmp_path):
  root, paths = scene_data
  records = readers.read_dataset(paths["val"], str(root / "images"))
  vocab = _vocab(records)
  shards, written, bad = tfrecords.write_tfrecords(
      records, vocab, str(tmp_path / "val"), num_shards=3, num_workers=2)
  assert len(shards) == 3 and written == 5 * len(records) and not bad
  seen = {}
  for serialized in tf.data.TFRecordDataset(shards):
    image_id, data, ids = tfrecords.parse_sequence_example(serialized)
    seen.setdefault(image_id.numpy().decode(), []).append(
        " ".join(vocab.decode(ids.numpy())))
    assert data.numpy()[:4] == b"\x89PNG"
  for record in records:
    assert sorted(seen[record.image_id]) == sorted(
        " ".join(tokenize(c)) for c in record.captions)


def test_pipeline_shapes_and_masks(scene_data):
  root, paths = scene_data
  records = readers.read_dataset(paths["train"], str(root / "images"))
  vocab = _vocab(records)
  config = pipeline.PipelineConfig(batch_size=8, image_size=40,
                                   bucket_boundaries=(9, 12), augment=True)
  batch = next(iter(pipeline.batched(
      pipeline.from_records(records, vocab), config, training=True)))
  assert batch["image"].shape == (8, 40, 40, 3)
  assert batch["image"].dtype == tf.float32
  assert 0 <= float(tf.reduce_min(batch["image"])) <= \
      float(tf.reduce_max(batch["image"])) <= 255
  inputs, targets, mask = (batch[k].numpy() for k in
                           ("input_ids", "target_ids", "mask"))
  assert inputs.shape == targets.shape == mask.shape
  assert (inputs[:, 0] == vocab.start_id).all()
  for i in range(8):
    n = int(mask[i].sum())
    assert targets[i, n - 1] == vocab.end_id  # <end> is a real target.
    assert (targets[i, n:] == vocab.pad_id).all() and (mask[i, n:] == 0).all()
    assert (inputs[i, 1:n] == targets[i, :n - 1]).all()  # Shifted by one.


def test_augmentation_is_new_at_every_read_and_resumes_the_same(scene_data,
                                                                tmp_path):
  """One image with two captions, one caption a batch: its four reads in two
  epochs are four different distortions of it; a stream checkpointed after
  three batches (or skipped to there, as a distributed run resumes) goes on
  with the uninterrupted stream's batches."""
  root, paths = scene_data
  record = readers.read_dataset(paths["val"], str(root / "images"))[0]
  record.captions = record.captions[:2]
  config = pipeline.PipelineConfig(batch_size=1, image_size=16,
                                   shuffle_buffer=2, augment=True)

  def stream():
    return pipeline.batched(pipeline.from_records([record], _vocab([record])),
                            config, training=True)

  full = [b["image"][0].numpy() for b in stream().take(6)]
  plain = pipeline.decode_image(tf.io.read_file(record.image_path), 16)
  reads = full[:4]
  for i, image in enumerate(reads):
    assert np.abs(image - plain).max() > 1.0
    for other in reads[i + 1:]:
      assert np.abs(image - other).max() > 1.0
  iterator = iter(stream())
  for _ in range(3):
    next(iterator)
  saved = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "it"))
  resumed = iter(stream())
  tf.train.Checkpoint(iterator=resumed).read(saved).assert_consumed()
  skipped = iter(stream().skip(3))
  for want in full[3:]:
    np.testing.assert_array_equal(next(resumed)["image"][0], want)
    np.testing.assert_array_equal(next(skipped)["image"][0], want)


def test_pipeline_truncates_long_captions():
  ids = tf.constant([1, 5, 6, 7, 8, 9, 2])
  inputs, targets = pipeline.split_caption(ids, max_length=3)
  assert inputs.numpy().tolist() == [1, 5, 6, 7]
  assert targets.numpy().tolist() == [5, 6, 7, 2]


def test_pipeline_reads_cached_features(scene_data):
  root, paths = scene_data
  records = readers.read_dataset(paths["val"], str(root / "images"))
  vocab = _vocab(records)
  table = np.arange(len(records) * 3, dtype=np.float16).reshape(-1, 3)
  lookup = pipeline.FeatureLookup([r.image_id for r in records], table)
  config = pipeline.PipelineConfig(batch_size=4)
  batch = next(iter(pipeline.batched(
      pipeline.from_records(records, vocab, read_images=False), config,
      training=False, features=lookup)))
  assert "image" not in batch
  batch = lookup.attach(batch)
  rows = [[r.image_id for r in records].index(i.decode())
          for i in batch["image_id"].numpy()]
  np.testing.assert_array_equal(batch["features"].numpy(), table[rows])


@pytest.mark.parametrize("chunk_bytes", [1, 20, 1 << 20])
def test_feature_lookup_fills_its_table_a_chunk_at_a_time(tmp_path,
                                                         chunk_bytes):
  """From a float32 memmap of 7 rows [7, 2, 3]: rows of 12 bytes (float16)
  a chunk at a time, the last one short, give the whole table."""
  table = np.lib.format.open_memmap(str(tmp_path / "f.npy"), mode="w+",
                                    dtype=np.float32, shape=(7, 2, 3))
  table[:] = np.arange(42).reshape(7, 2, 3) / 4
  lookup = pipeline.FeatureLookup([f"{i}.jpg" for i in range(7)], table,
                                  chunk_bytes=chunk_bytes)
  assert lookup.values.dtype == tf.float16 and lookup.feature_shape == (2, 3)
  np.testing.assert_array_equal(lookup.values.numpy(),
                                np.asarray(table, np.float16))
  rows = lookup.attach({"feature_row": lookup.rows(tf.constant(
      ["6.jpg", "0.jpg"]))})["features"]
  np.testing.assert_array_equal(rows.numpy(), table[[6, 0]])


def test_pipeline_reads_tfrecords(scene_data, tmp_path):
  root, paths = scene_data
  records = readers.read_dataset(paths["test"], str(root / "images"))
  vocab = _vocab(records)
  tfrecords.write_tfrecords(records, vocab, str(tmp_path / "test"), 2)
  config = pipeline.PipelineConfig(batch_size=5, image_size=16)
  batches = list(pipeline.batched(
      pipeline.from_tfrecords(str(tmp_path / "test-*")), config,
      training=False))
  assert sum(b["image"].shape[0] for b in batches) == 5 * len(records)
