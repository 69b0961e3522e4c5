"""Readers for the caption-file formats users have, all giving CaptionRecords.

Formats (detected from the file name and contents by ``read_dataset``):
  * MS-COCO captions JSON (``captions_train2014.json``): ``images`` with
    ``id``/``file_name`` and ``annotations`` with ``image_id``/``caption``.
  * Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr8k.json``,
    ``dataset_flickr30k.json``): ``images`` with ``filename``, ``split`` and
    ``sentences`` (``raw``).
  * Flickr8k/Flickr30k token files: ``name.jpg#n<TAB>caption`` per line; the
    split comes from ``Flickr_8k.{train,dev,test}Images.txt`` beside it.
  * The Kaggle ``captions.txt`` CSV: header ``image,caption``.

Bad input (malformed files, empty or punctuation-only captions, duplicate ids,
missing image files) raises an InputError naming the file and line, or, with
``on_error="skip"``, is counted in a ``SkipReport`` and left out.
"""

import collections
import csv
import io
import json
import os

from im2txt_ext.data.records import CaptionRecord
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.errors import InputError

# Flickr split files give "dev"; the rest of the library says "val".
_SPLIT_NAMES = {"dev": "val", "validation": "val"}


class SkipReport:
  """Counts what a reader left out with ``on_error="skip"``, by reason."""

  def __init__(self):
    self.counts = collections.Counter()
    self.examples = {}

  def add(self, reason, where):
    self.counts[reason] += 1
    self.examples.setdefault(reason, where)

  @property
  def total(self):
    return sum(self.counts.values())

  def summary(self):
    if not self.total:
      return "nothing skipped"
    return "; ".join(f"skipped {n} ({reason}, first at {self.examples[reason]})"
                     for reason, n in sorted(self.counts.items()))


class _Problems:
  """Raises or records each problem, as ``on_error`` says."""

  def __init__(self, on_error, report):
    if on_error not in ("raise", "skip"):
      raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    self.on_error = on_error
    self.report = report if report is not None else SkipReport()

  def __call__(self, reason, path, line=None):
    if self.on_error == "raise":
      raise InputError(reason, path, line)
    where = f"{path}:{line}" if line is not None else str(path)
    self.report.add(reason, where)


def _read_text(path):
  """Returns a UTF-8 file's text, less any byte-order mark."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8").removeprefix("\ufeff")
  except UnicodeDecodeError as e:
    raise InputError(f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                     f"{e.start})", path,
                     data.count(b"\n", 0, e.start) + 1) from None


def _load_json(path):
  try:
    return json.loads(_read_text(path))
  except json.JSONDecodeError as e:
    raise InputError(f"malformed JSON ({e.msg} at line {e.lineno})", path,
                     e.lineno) from None


# JSON field kinds for _field_problem: a test and how messages name the kind.
_KINDS = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "id": (lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
           "a string or an integer"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "strings": (lambda v: isinstance(v, list) and
                all(isinstance(s, str) for s in v), "a list of strings"),
}


def _type_name(value):
  if value is None:
    return "null"
  if isinstance(value, list) and value:
    return "list of " + "/".join(sorted({_type_name(v) for v in value}))
  return type(value).__name__


def _field_problem(obj, where, required, optional=None):
  """Says what is wrong with a JSON object's fields, or returns None.

  ``required`` and ``optional`` map field names to kinds in ``_KINDS``;
  ``where`` (e.g. "images[3]") starts the message.
  """
  prefix = f"{where}: " if where else ""
  if not isinstance(obj, dict):
    return f"{prefix}must be an object, got {_type_name(obj)}"
  for name, kind in {**required, **(optional or {})}.items():
    if name not in obj:
      if name in required:
        return f"{prefix}lacks {name!r}"
      continue
    test, wanted = _KINDS[kind]
    if not test(obj[name]):
      return f"{prefix}{name!r} must be {wanted}, got {_type_name(obj[name])}"
  return None


def _split_from_name(path):
  name = os.path.basename(path).lower()
  for split in ("train", "val", "test"):
    if split in name:
      return split
  return ""


class _Builder:
  """Collects captions per image, checking each caption as it comes."""

  def __init__(self, path, problems):
    self.path = path
    self.problems = problems
    self.records = collections.OrderedDict()
    self.lines = {}  # image id -> line that named the image, where known.

  def add_image(self, image_id, image_path, split, line=None):
    if image_id in self.records:
      self.problems(f"duplicate image id {image_id!r}", self.path, line)
      return False
    self.records[image_id] = CaptionRecord(image_id, image_path, [], split)
    self.lines[image_id] = line
    return True

  def add_caption(self, image_id, caption, line=None):
    if not tokenize(caption):
      self.problems(f"empty caption for image {image_id!r}", self.path, line)
      return
    if image_id not in self.records:
      self.problems(f"caption for unknown image id {image_id!r}", self.path,
                    line)
      return
    self.records[image_id].captions.append(caption.strip())

  def finish(self, images_dir):
    records = []
    for record in self.records.values():
      if images_dir is not None:
        record.image_path = os.path.join(images_dir, record.image_path)
        if not os.path.isfile(record.image_path):
          self.problems(f"image file not found: {record.image_path}",
                        self.path, self.lines[record.image_id])
          continue
      if not record.captions:
        self.problems(f"image {record.image_id!r} has no captions", self.path)
        continue
      records.append(record)
    return records


def read_coco(path, images_dir=None, split=None, on_error="raise",
              report=None):
  """Reads an MS-COCO captions JSON file (``captions_train2014.json`` layout).

  The split is ``split`` if given, else taken from the file name.
  """
  problems = _Problems(on_error, report)
  data = _load_json(path)
  if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
    raise InputError("not a COCO captions file: needs 'images' and "
                     "'annotations'", path)
  problem = _field_problem(data, "", {"images": "list", "annotations": "list"})
  if problem:
    raise InputError(problem, path)
  split = _split_from_name(path) if split is None else split
  builder = _Builder(path, problems)
  for i, image in enumerate(data["images"]):
    problem = _field_problem(image, f"images[{i}]",
                             {"id": "id", "file_name": "string"})
    if problem:
      problems(problem, path)
      continue
    builder.add_image(str(image["id"]), image["file_name"], split)
  seen_ids = set()
  for i, ann in enumerate(data["annotations"]):
    problem = _field_problem(ann, f"annotations[{i}]",
                             {"image_id": "id", "caption": "string"},
                             {"id": "id"})
    if problem:
      problems(problem, path)
      continue
    if "id" in ann:
      if ann["id"] in seen_ids:
        problems(f"duplicate annotation id {ann['id']!r}", path)
        continue
      seen_ids.add(ann["id"])
    builder.add_caption(str(ann["image_id"]), ann["caption"])
  return builder.finish(images_dir)


def read_karpathy(path, images_dir=None, on_error="raise", report=None):
  """Reads a Karpathy split file (``dataset_{coco,flickr8k,flickr30k}.json``).

  COCO entries carry a ``filepath`` folder (``train2014``) joined before the
  file name. Karpathy's "restval" split is kept as it is.
  """
  problems = _Problems(on_error, report)
  data = _load_json(path)
  if not isinstance(data, dict) or "images" not in data:
    raise InputError("not a Karpathy split file: needs 'images'", path)
  problem = _field_problem(data, "", {"images": "list"})
  if problem:
    raise InputError(problem, path)
  builder = _Builder(path, problems)
  for i, image in enumerate(data["images"]):
    problem = _field_problem(
        image, f"images[{i}]", {"filename": "string"},
        {"filepath": "string", "cocoid": "id", "imgid": "id",
         "split": "string", "sentences": "list"})
    if problem:
      problems(problem, path)
      continue
    image_path = os.path.join(image.get("filepath", ""), image["filename"])
    image_id = str(image.get("cocoid", image.get("imgid", image["filename"])))
    split = _SPLIT_NAMES.get(image.get("split", ""), image.get("split", ""))
    if not builder.add_image(image_id, image_path, split):
      continue
    for j, sentence in enumerate(image.get("sentences", [])):
      problem = _field_problem(sentence, f"images[{i}].sentences[{j}]", {},
                               {"raw": "string", "tokens": "strings"})
      if problem:
        problems(problem, path)
        continue
      builder.add_caption(image_id, sentence.get(
          "raw", " ".join(sentence.get("tokens", []))))
  return builder.finish(images_dir)


def _flickr_splits(path):
  """Maps image file names to splits from the Flickr split files beside path."""
  folder = os.path.dirname(path)
  splits = {}
  for name in sorted(os.listdir(folder or ".")):
    lower = name.lower()
    if not (lower.startswith("flickr") and lower.endswith("images.txt")):
      continue
    for split in ("train", "dev", "test"):
      if f"{split}images" in lower.replace("_", ""):
        for line in _read_text(os.path.join(folder, name)).splitlines():
          if line.strip():
            splits[line.strip()] = _SPLIT_NAMES.get(split, split)
  return splits


def read_flickr_tokens(path, images_dir=None, on_error="raise", report=None):
  """Reads a Flickr8k/30k token file: ``name.jpg#n<TAB>caption`` per line."""
  problems = _Problems(on_error, report)
  splits = _flickr_splits(path)
  builder = _Builder(path, problems)
  lines = io.StringIO(_read_text(path), newline=None)
  for line_no, line in enumerate(lines, 1):
    line = line.rstrip("\n")
    if not line.strip():
      continue
    key, tab, caption = line.partition("\t")
    name, hash_, number = key.partition("#")
    if not tab or not hash_ or not number.strip().isdigit() or not name:
      problems("expected 'image.jpg#n<TAB>caption'", path, line_no)
      continue
    if name not in builder.records:
      builder.add_image(name, name, splits.get(name, ""), line_no)
    builder.add_caption(name, caption, line_no)
  return builder.finish(images_dir)


def read_captions_csv(path, images_dir=None, on_error="raise", report=None):
  """Reads the Kaggle Flickr ``captions.txt`` CSV (header ``image,caption``)."""
  problems = _Problems(on_error, report)
  splits = _flickr_splits(path)
  builder = _Builder(path, problems)
  rows = csv.reader(io.StringIO(_read_text(path), newline=""))
  try:
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header[:2]] != \
        ["image", "caption"]:
      raise InputError("expected the CSV header 'image,caption'", path, 1)
    for line_no, row in enumerate(rows, 2):
      if not row:
        continue
      if len(row) < 2 or not row[0].strip():
        problems("expected 'image,caption'", path, line_no)
        continue
      name, caption = row[0].strip(), ",".join(row[1:])
      if name not in builder.records:
        builder.add_image(name, name, splits.get(name, ""), line_no)
      builder.add_caption(name, caption, line_no)
  except csv.Error as e:
    raise InputError(f"malformed CSV ({e})", path, rows.line_num) from None
  return builder.finish(images_dir)


def detect_format(path):
  """Returns "coco", "karpathy", "flickr_tokens" or "captions_csv"."""
  if not os.path.isfile(path):
    raise InputError("caption file not found", path)
  with open(path, "rb") as f:
    head = f.read(4096)
  text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
  if text.startswith("{"):
    return "karpathy" if os.path.basename(path).startswith("dataset_") or \
        '"sentences"' in text else "coco"
  first_line = text.splitlines()[0] if text else ""
  if first_line.lower().startswith("image,caption"):
    return "captions_csv"
  if "\t" in first_line and "#" in first_line.split("\t")[0]:
    return "flickr_tokens"
  raise InputError("unknown caption file format (expected COCO or Karpathy "
                   "JSON, a Flickr token file or a captions.txt CSV)", path)


_READERS = {
    "coco": read_coco,
    "karpathy": read_karpathy,
    "flickr_tokens": read_flickr_tokens,
    "captions_csv": read_captions_csv,
}


def read_dataset(path, images_dir=None, on_error="raise", report=None):
  """Reads any supported caption file into a list of CaptionRecords.

  Args:
    path: str. A caption file in one of the supported formats.
    images_dir: optional str. Folder of the image files; when given, image
      paths are joined to it and images absent from it are errors (or skips).
    on_error: "raise" (one-line InputError naming file and line) or "skip"
      (counted in ``report``).
    report: optional SkipReport collecting skips.
  """
  reader = _READERS[detect_format(path)]
  return reader(path, images_dir=images_dir, on_error=on_error, report=report)


def split_records(records, split, path=None):
  """Returns the records of one split ("train", "val", "test"); with
  ``path``, the caption file they came from, none is an InputError."""
  chosen = [r for r in records if r.split == split]
  if path is not None and not chosen:
    raise InputError(f"no images of split {split!r}", path)
  return chosen
