"""The retrieval baseline: caption an image with a training caption.

Consensus re-ranking of nearest neighbours (Devlin et al. 2015, "Exploring
Nearest Neighbor Approaches for Image Captioning"): find the k training
images closest to the query in CNN-feature space (cosine similarity of the
pooled features), pool their captions as candidates C, and return

    c* = argmax_{c in C} (1 / (|C| - 1)) * sum_{c' in C, c' != c} sim(c, c')

the candidate that agrees most with the others, where sim is CIDEr-D (its
document frequencies from the training captions) or sentence BLEU-4. No
training: it shows how much a generative model adds over reusing what it
has seen.
"""

import numpy as np
from tqdm import tqdm

from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.errors import InputError
from im2txt_ext.training.cider_d import CiderD

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


def consensus_scores(candidates, consensus="cider", corpus=None):
  """Mean similarity of each candidate to the other candidates: float [C].

  Args:
    candidates: list of C >= 2 captions, each a list of word tokens.
    consensus: "cider" (CIDEr-D) or "bleu" (sentence BLEU-4, pycocoevalcap).
    corpus: for "cider", a CiderD whose references give the document
      frequencies (the retrieval baseline's: the training captions).
      Defaults to the candidates, each its own document. (Not the other
      candidates as each one's references, as pycocoevalcap would: then an
      n-gram of two candidates is in every document and weighs 0, and so
      does every shared n-gram, and all scores are 0.)
  """
  if consensus not in CONSENSUS:
    raise InputError(f"unknown consensus {consensus!r}: use cider or bleu")
  if consensus == "cider":
    if corpus is None:
      corpus = CiderD({i: [c] for i, c in enumerate(candidates)})
    similarity = corpus.pairwise(candidates)
    np.fill_diagonal(similarity, 0.0)
    return similarity.sum(axis=1) / (len(candidates) - 1)
  from pycocoevalcap.bleu.bleu import Bleu
  joined = [" ".join(c) for c in candidates]
  gts = {i: joined[:i] + joined[i + 1:] for i in range(len(joined))}
  res = {i: [c] for i, c in enumerate(joined)}
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
    self.captions = [[tokenize(c) for c in captions]
                     for captions in train_captions]
    self.neighbours = neighbours
    self.consensus = consensus
    self.corpus = CiderD(dict(enumerate(self.captions))) \
        if consensus == "cider" else None

  def caption(self, query_features, progress=False):
    """Best consensus caption (str) for each row of float [Q, D]; a
    progress bar on stderr if ``progress``."""
    out = []
    for rows in tqdm(nearest(query_features, self.features, self.neighbours),
                     desc="retrieval", unit="image", disable=not progress):
      candidates = [c for row in rows for c in self.captions[row]]
      best = 0 if len(candidates) == 1 else int(np.argmax(
          consensus_scores(candidates, self.consensus, self.corpus)))
      out.append(" ".join(candidates[best]))
    return out
