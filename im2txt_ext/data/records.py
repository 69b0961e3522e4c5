"""The one record type that every caption-dataset reader produces."""

import dataclasses


@dataclasses.dataclass
class CaptionRecord:
  """One image with its reference captions.

  Attributes:
    image_id: str. Unique id of the image within its dataset.
    image_path: str. Absolute or dataset-relative path of the image file.
    captions: list of str. Raw reference captions, in file order.
    split: str. "train", "val", "test", "restval" or "" where none is given.
  """
  image_id: str
  image_path: str
  captions: list
  split: str = ""
