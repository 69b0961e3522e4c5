"""What an evaluation's saved captions say beyond the table.

Reads the ``captions.json`` an evaluation wrote (each photo's ``generated``
caption and its ``references``) and re-scores it; it chooses nothing.

BLEU under two tokenisations. The table scores captions the way the COCO
evaluator does (lower case, punctuation dropped). Flickr8k's references
end in " ."; kept as a token on both sides, as a script that only splits
on spaces would keep it, that period is one free unigram match per
caption.

Length. The corpus length ratio (the generated words over the reference
words, each caption's reference the one nearest its length, as
pycocoevalcap's BLEU takes it) and BLEU's brevity penalty exp(1 - 1/ratio)
below 1 (Papineni et al. 2002): with a penalty of 1 a BLEU-1 gap
is the unigram precision's, not the captions' length.

Copies. With ``--train_captions``, the share of generated captions that
are word for word a training caption (after tokenisation), the measure of
a decoder that recalls sentences instead of describing the photo
(Vinyals et al. 2016, "Lessons learned"); the table's "distinct" column
is its companion.

Checkpoint choice. The trainer validates on the first
``train.validation_images`` photos of the dev split, so a dev
evaluation's scores mix photos that chose the checkpoint with photos no
choice saw. With ``--validated_images`` the two parts are scored apart
(BLEU-1, BLEU-4, METEOR, CIDEr-D; each part's CIDEr-D takes its document
frequencies from that part alone).

  python -m experiments.caption_analysis \
      --captions=results/flickr8k/runs/hard_attention-seed0/test/captions.json \
      --train_captions=../shared/data/flickr8k/Flickr8k.token.txt
"""

import json
import math
import os

from absl import flags

from im2txt_ext.data.tokenizer import tokenize

PROTOCOLS = {
    "library": lambda caption: " ".join(tokenize(caption)),
    "period kept": lambda caption: " ".join(tokenize(caption) + ["."]),
}


def bleu_by_protocol(records):
  """{protocol: [BLEU-1, ..., BLEU-4]} of records, each a dict with a
  ``generated`` caption and its ``references``."""
  from pycocoevalcap.bleu.bleu import Bleu
  scores = {}
  for name, tokenised in PROTOCOLS.items():
    candidates = {i: [tokenised(r["generated"])] for i, r in enumerate(records)}
    references = {i: [tokenised(c) for c in r["references"]]
                  for i, r in enumerate(records)}
    bleu, _ = Bleu(4).compute_score(references, candidates, verbose=0)
    scores[name] = [float(b) for b in bleu]
  return scores


def brevity(records):
  """(length ratio, brevity penalty) of records under the library's
  tokenisation: the generated words over the reference words, each
  caption's reference length the one nearest its own (the shorter on a
  tie), summed over the records; BP = exp(1 - 1 / ratio) where the ratio
  is below 1, else 1."""
  generated = references = 0
  for r in records:
    length = len(tokenize(r["generated"]))
    lengths = [len(tokenize(c)) for c in r["references"]]
    generated += length
    references += min(lengths, key=lambda n: (abs(n - length), n))
  ratio = generated / references
  return ratio, 1.0 if ratio >= 1 else math.exp(1 - 1 / ratio)


def copied_share(records, training_captions):
  """The share of records whose generated caption, tokenised, is one of
  ``training_captions`` tokenised."""
  seen = {tuple(tokenize(c)) for c in training_captions}
  return sum(tuple(tokenize(r["generated"])) in seen
             for r in records) / len(records)


def scores_by_part(records, validated, meteor=True):
  """{"validated": scores of the first ``validated`` records, "unseen":
  scores of the rest}, each caption_metrics' dict over that part alone
  with "images", the part's size."""
  from im2txt_ext.metrics import caption_metrics
  parts = {"validated": records[:validated], "unseen": records[validated:]}
  return {name: dict(caption_metrics(
      {i: r["generated"] for i, r in enumerate(part)},
      {i: r["references"] for i, r in enumerate(part)}, meteor=meteor),
                     images=len(part))
          for name, part in parts.items()}


def read_records(path):
  """The records of an evaluation's captions.json; InputError if it is not
  one."""
  from im2txt_ext.errors import InputError
  if not os.path.isfile(path):
    raise InputError("captions file not found", path)
  try:
    with open(path) as f:
      records = json.load(f)
  except json.JSONDecodeError as e:
    raise InputError(f"not JSON ({e.msg})", path, e.lineno) from None
  if not isinstance(records, list) or not records or not all(
      isinstance(r, dict) and isinstance(r.get("generated"), str)
      and r.get("references") for r in records):
    raise InputError("expected a non-empty list of records with 'generated' "
                     "and 'references' (an evaluation's captions.json)", path)
  return records


def define_flags():
  flags.DEFINE_list("captions", None, "captions.json files written by "
                    "im2txt-evaluate or the comparison driver.", required=True)
  flags.DEFINE_string("train_captions", None, "A caption file (any format "
                      "the readers take); with it, the share of captions "
                      "copied from its training split is printed.")
  flags.DEFINE_string("train_split", "train", "That file's training split.")
  flags.DEFINE_integer("validated_images", None, "The run's "
                       "train.validation_images; with it, the photos that "
                       "chose the checkpoint (the first ones) and the rest "
                       "are scored apart.", lower_bound=1)


def main(argv):
  del argv
  from im2txt_ext.data.readers import read_dataset, split_records
  from im2txt_ext.errors import InputError
  f = flags.FLAGS
  evaluations = {path: read_records(path) for path in f.captions}
  for path, records in evaluations.items():
    if f.validated_images and f.validated_images >= len(records):
      raise InputError(f"--validated_images={f.validated_images} leaves no "
                       f"photo outside validation ({len(records)} records)",
                       path)
  training = None
  if f.train_captions:
    training = [c for r in split_records(read_dataset(f.train_captions),
                                         f.train_split, f.train_captions)
                for c in r.captions]
  print("| captions | BLEU-1 | BLEU-4 | BLEU-1, period kept | "
        "BLEU-4, period kept | length ratio | brevity penalty | "
        "copied from training |")
  print("|---|---|---|---|---|---|---|---|")
  for path, records in evaluations.items():
    bleu = bleu_by_protocol(records)
    ratio, penalty = brevity(records)
    copied = "n/a" if training is None else \
        f"{copied_share(records, training):.3f}"
    print(f"| {path} | {bleu['library'][0]:.3f} | {bleu['library'][3]:.3f} | "
          f"{bleu['period kept'][0]:.3f} | {bleu['period kept'][3]:.3f} | "
          f"{ratio:.3f} | {penalty:.3f} | {copied} |")
  if not f.validated_images:
    return
  names = ("BLEU-1", "BLEU-4", "METEOR", "CIDEr-D")
  print("\n| captions | photos | " + " | ".join(names) + " |")
  print("|---|---" + "|---" * len(names) + "|")
  for path, records in evaluations.items():
    for part, scores in scores_by_part(records, f.validated_images).items():
      print(f"| {path} | {scores['images']} {part} | " + " | ".join(
          f"{scores[n]:.3f}" if n in scores else "n/a" for n in names) + " |")


def entry():
  from im2txt_ext.cli import run
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
