"""The retrieval baseline: caption an image with a training caption.

Consensus re-ranking of nearest neighbours (Devlin et al. 2015, "Exploring
Nearest Neighbor Approaches for Image Captioning"): find the k training
images closest to the query in CNN-feature space (cosine similarity of the
pooled features), pool their captions as candidates C, and return

    c* = argmax_{c in C} (1 / (|C| - 1)) * sum_{c' in C, c' != c} sim(c, c')

the candidate that agrees most with the others, where sim is CIDEr-D or
sentence BLEU-4 (pycocoevalcap's scorers). No training: it shows how much a
generative model adds over reusing what it has seen.
"""

import numpy as np

from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.errors import InputError

CONSENSUS = ("cider", "bleu")


def normalise(features):
  """Rows scaled to unit L2 norm (zero rows stay zero): float32 [N, D]."""
  features = np.asarray(features, np.float32)
  norms = np.linalg.norm(features, axis=1, keepdims=True)
  return features / np.maximum(norms, 1e-12)


def nearest(query, gallery, k):
  """Indices [Q, k] of the k most cosine-similar gallery rows, best first.

  Args:
    query: float [Q, D]. gallery: float [N, D]. k: int <= N.
  """
  similarity = normalise(query) @ normalise(gallery).T
  top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
  order = np.take_along_axis(similarity, top, 1).argsort(axis=1)[:, ::-1]
  return np.take_along_axis(top, order, 1)


def consensus_scores(candidates, consensus="cider"):
  """Mean similarity of each candidate to the other candidates: float [C].

  Args:
    candidates: list of str, C >= 2 captions (already tokenised and joined).
    consensus: "cider" (CIDEr-D, document frequencies from the candidates)
      or "bleu" (sentence BLEU-4).
  """
  if consensus not in CONSENSUS:
    raise InputError(f"unknown consensus {consensus!r}: use cider or bleu")
  gts = {i: candidates[:i] + candidates[i + 1:] for i in range(len(candidates))}
  res = {i: [c] for i, c in enumerate(candidates)}
  if consensus == "cider":
    from pycocoevalcap.cider.cider import Cider
    _, scores = Cider().compute_score(gts, res)
    return np.asarray(scores, np.float64)
  from pycocoevalcap.bleu.bleu import Bleu
  _, scores = Bleu(4).compute_score(gts, res, verbose=0)
  return np.asarray(scores[3], np.float64)


class ConsensusRetrieval:
  """Nearest-neighbour captioner over a training set of features.

  Args:
    train_features: float [N, D], the pooled features of the training images.
    train_captions: list (N) of lists of str, each image's captions.
    neighbours: int. k, training images whose captions are candidates.
    consensus: "cider" or "bleu", the similarity that ranks candidates.
  """

  def __init__(self, train_features, train_captions, neighbours=10,
               consensus="cider"):
    if len(train_features) != len(train_captions):
      raise InputError(f"{len(train_features)} feature rows but "
                       f"{len(train_captions)} training images")
    if not 1 <= neighbours <= len(train_captions):
      raise InputError(f"neighbours must be in 1..{len(train_captions)}, got "
                       f"{neighbours}")
    if consensus not in CONSENSUS:
      raise InputError(f"unknown consensus {consensus!r}: use cider or bleu")
    self.features = np.asarray(train_features, np.float32)
    self.captions = [[" ".join(tokenize(c)) for c in captions]
                     for captions in train_captions]
    self.neighbours = neighbours
    self.consensus = consensus

  def caption(self, query_features):
    """Best consensus caption (str) for each row of float [Q, D]."""
    out = []
    for rows in nearest(query_features, self.features, self.neighbours):
      candidates = [c for row in rows for c in self.captions[row]]
      if len(candidates) == 1:
        out.append(candidates[0])
        continue
      scores = consensus_scores(candidates, self.consensus)
      out.append(candidates[int(np.argmax(scores))])
    return out
