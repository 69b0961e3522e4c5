"""How much BLEU moves with the tokenisation: saved captions scored twice.

The table scores captions the way the COCO evaluator does (lower case,
punctuation dropped). The 2015 papers scored Flickr8k before that protocol
was common, and Flickr8k's own references end in " ."; kept as a token on
both sides, that period is one free unigram match per caption. This prints
BLEU-1 to 4 of each ``captions.json`` an evaluation wrote (its
``generated`` caption and ``references`` per photo) under both protocols:

  python -m experiments.bleu_protocols \
      --captions=results/flickr8k/runs/hard_attention-seed0/test/captions.json

It re-scores captions already made and chooses nothing.
"""

import json
import os

from absl import flags

from im2txt_ext.data.tokenizer import tokenize

PROTOCOLS = {
    "library (no punctuation)": lambda caption: " ".join(tokenize(caption)),
    "final period kept": lambda caption: " ".join(tokenize(caption) + ["."]),
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


def main(argv):
  del argv
  records = {path: read_records(path) for path in flags.FLAGS.captions}
  print("| captions | protocol | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 |")
  print("|---|---|---|---|---|---|")
  for path, evaluation in records.items():
    for name, bleu in bleu_by_protocol(evaluation).items():
      print(f"| {path} | {name} | " + " | ".join(f"{b:.3f}" for b in bleu)
            + " |")


def entry():
  from im2txt_ext.cli import run
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
