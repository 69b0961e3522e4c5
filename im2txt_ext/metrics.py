"""Standard caption metrics through pycocoevalcap (the MS-COCO evaluator).

Captions are tokenised with the library's tokenizer (lower case, no
punctuation) instead of the Java PTB tokenizer, so BLEU, ROUGE-L and CIDEr-D
need no Java; METEOR runs pycocoevalcap's Java jar and is left out, with a
note, where Java is absent. SPICE needs model downloads and is not offered.
"""

import shutil

from im2txt_ext.data.tokenizer import tokenize


def _tokenised(captions):
  return [" ".join(tokenize(c)) for c in captions]


def caption_metrics(candidates, references, meteor=True):
  """Scores generated captions against all references of each image.

  Args:
    candidates: dict image id -> generated caption (str; may be empty).
    references: dict image id -> list of reference captions.
    meteor: bool. Also compute METEOR where Java is available.

  Returns:
    dict with BLEU-1..4, ROUGE-L, CIDEr-D (pycocoevalcap's "CIDEr" is the
    CIDEr-D variant) and METEOR, each a float; "notes" lists what was left out.
  """
  from pycocoevalcap.bleu.bleu import Bleu
  from pycocoevalcap.cider.cider import Cider
  from pycocoevalcap.rouge.rouge import Rouge

  ids = sorted(candidates)
  missing = [i for i in ids if not references.get(i)]
  if missing:
    raise ValueError(f"no references for image ids {missing[:5]}")
  res = {i: _tokenised([candidates[i]]) for i in ids}
  gts = {i: _tokenised(references[i]) for i in ids}
  out, notes = {}, []
  if not ids:
    return {"notes": ["no captions to score"]}
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  for n, value in enumerate(bleu, 1):
    out[f"BLEU-{n}"] = float(value)
  out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
  out["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
  if meteor:
    if shutil.which("java"):
      from pycocoevalcap.meteor.meteor import Meteor
      # METEOR's jar cannot read an empty candidate; give it a non-word.
      safe = {i: [c[0] or "<empty>"] for i, c in res.items()}
      out["METEOR"] = float(Meteor().compute_score(gts, safe)[0])
    else:
      notes.append("METEOR skipped: Java not found")
  notes.append("SPICE not computed: it needs downloads unavailable offline")
  out["notes"] = notes
  return out


def bleu4(candidates, references):
  """Corpus BLEU-4 only (fast; for validation during training)."""
  from pycocoevalcap.bleu.bleu import Bleu
  ids = sorted(candidates)
  if not ids:
    return 0.0
  scores, _ = Bleu(4).compute_score(
      {i: _tokenised(references[i]) for i in ids},
      {i: _tokenised([candidates[i]]) for i in ids}, verbose=0)
  return float(scores[3])


def save_evaluation(output_dir, records, candidates, metrics, show=0):
  """Writes metrics.json and captions.json (generated vs references per
  image) to ``output_dir``, prints ``show`` examples and the metrics line."""
  import json
  import os
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  with open(os.path.join(output_dir, "captions.json"), "w") as f:
    json.dump([{"image_id": r.image_id, "image": r.image_path,
                "generated": candidates[r.image_id],
                "references": r.captions} for r in records], f, indent=1)
  for record in records[:show]:
    print(f"{os.path.basename(record.image_path)}: "
          f"{candidates[record.image_id]!r}   (a reference: "
          f"{record.captions[0]!r})")
  print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in metrics.items()}))
