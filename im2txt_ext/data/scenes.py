"""The embedded dataset: synthetic scenes of coloured shapes with captions.

Each image holds two shapes (circle, square or triangle; four colours; small
or large) placed so that one is clearly above, below, left or right of the
other, on a noisy tinted background. Five captions per image name both shapes
and their spatial relation in different words and orders ("a red circle above
a blue square", "a blue square below a red circle", ...). Where the shapes are
decides the caption's relation words, so a decoder must know *where* things
are, which is what attention should be good at.

The dataset is written in the MS-COCO captions format
(``captions_{train,val,test}.json`` and ``images/``) so that it goes through
exactly the same readers as real data. Everything is deterministic from the
seed.
"""

import json
import os

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.09, "large": 0.16}  # Half-extent as a fraction of width.
# Relation of the first shape to the second, and its inverse.
RELATIONS = {
    "above": "below",
    "below": "above",
    "to the left of": "to the right of",
    "to the right of": "to the left of",
}


def _draw_shape(draw, shape, centre, half, colour):
  x, y = centre
  if shape == "circle":
    draw.ellipse([x - half, y - half, x + half, y + half], fill=colour)
  elif shape == "square":
    draw.rectangle([x - half, y - half, x + half, y + half], fill=colour)
  else:
    draw.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)],
                 fill=colour)


def _place(rng, relation, halves, size):
  """Centres of two shapes such that the first is `relation` the second."""
  margin = [h + 1 for h in halves]
  while True:
    centres = [rng.uniform(m, size - m, 2) for m in margin]
    axis = 1 if relation in ("above", "below") else 0
    other = 1 - axis
    gap = halves[0] + halves[1] + 2
    first_before = relation in ("above", "to the left of")
    delta = centres[1][axis] - centres[0][axis]
    # Clearly separated along the relation's axis, and more along it than
    # across it, so the relation is unambiguous to a person.
    if (delta >= gap if first_before else -delta >= gap) and \
        abs(delta) > abs(centres[1][other] - centres[0][other]):
      return centres


def _describe(obj):
  return f"{obj['colour']} {obj['shape']}", \
      f"{obj['size']} {obj['colour']} {obj['shape']}"


def captions_for(first, second, relation):
  """Five captions for "first is `relation` second", in varied words."""
  inverse = RELATIONS[relation]
  a, a_sized = _describe(first)
  b, b_sized = _describe(second)
  return [
      f"a {a_sized} {relation} a {b_sized}",
      f"a {a} {relation} a {b}",
      f"a {b} {inverse} a {a}",
      f"there is a {a} {relation} a {b}",
      f"a {b_sized} {inverse} a {a_sized}",
  ]


def render_scene(rng, size=64):
  """Draws one random scene. Returns (PIL image, list of 5 captions)."""
  objects = []
  while len(objects) < 2:
    obj = {"colour": rng.choice(list(COLOURS)), "shape": rng.choice(SHAPES),
           "size": rng.choice(list(SIZES))}
    if not objects or (obj["colour"], obj["shape"]) != \
        (objects[0]["colour"], objects[0]["shape"]):
      objects.append(obj)
  relation = rng.choice(list(RELATIONS))
  halves = [SIZES[o["size"]] * size for o in objects]
  centres = _place(rng, relation, halves, size)

  tint = rng.uniform(150, 245, 3)
  noise = rng.normal(0, 12, (size, size, 3))
  background = np.clip(tint + noise, 0, 255).astype(np.uint8)
  image = Image.fromarray(background)
  draw = ImageDraw.Draw(image)
  for obj, centre, half in zip(objects, centres, halves):
    _draw_shape(draw, obj["shape"], centre, half, COLOURS[obj["colour"]])
  return image, captions_for(objects[0], objects[1], relation)


def generate(output_dir, num_train=3000, num_val=300, num_test=300, seed=0,
             image_size=64):
  """Writes the scene dataset in COCO captions format.

  Args:
    output_dir: str. Gets ``images/`` and ``captions_{split}.json``.
    num_train, num_val, num_test: int. Images per split.
    seed: int. Same seed, same dataset, byte for byte.
    image_size: int. Width and height of the PNG images, in pixels.

  Returns:
    dict mapping split name to the path of its captions file.
  """
  rng = np.random.default_rng(seed)
  images_dir = os.path.join(output_dir, "images")
  os.makedirs(images_dir, exist_ok=True)
  paths = {}
  image_id, caption_id = 0, 0
  for split, count in (("train", num_train), ("val", num_val),
                       ("test", num_test)):
    images, annotations = [], []
    for _ in range(count):
      image, captions = render_scene(rng, image_size)
      file_name = f"scene_{image_id:06d}.png"
      image.save(os.path.join(images_dir, file_name))
      images.append({"id": image_id, "file_name": file_name,
                     "width": image_size, "height": image_size})
      for caption in captions:
        annotations.append({"id": caption_id, "image_id": image_id,
                            "caption": caption})
        caption_id += 1
      image_id += 1
    path = os.path.join(output_dir, f"captions_{split}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      json.dump({"info": {"description": "im2txt_ext synthetic scenes",
                          "seed": seed},
                 "images": images, "annotations": annotations}, f)
    os.replace(path + ".tmp", path)
    paths[split] = path
  return paths
