"""The metrics wrapper against known values, the analysis of saved captions
(BLEU under two tokenisations, copies of training captions), and the retrieval
baseline."""

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from experiments.caption_analysis import (
    bleu_by_protocol, brevity, copied_share, read_records, scores_by_part)
from im2txt_ext.errors import InputError
from im2txt_ext.metrics import caption_metrics
from im2txt_ext.retrieval import ConsensusRetrieval, consensus_scores, nearest
from im2txt_ext.training.cider_d import CiderD


def test_identical_captions_score_bleu_one():
  refs = {"1": ["a red circle above a blue square"],
          "2": ["a small green triangle to the left of a circle"]}
  metrics = caption_metrics({k: v[0] for k, v in refs.items()}, refs,
                            meteor=False)
  for n in range(1, 5):
    assert metrics[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
  assert metrics["ROUGE-L"] == pytest.approx(1.0)


def test_cider_d_on_a_hand_computed_case():
  # Two images, so each word has idf log(2 / 1). Image A's candidate "a"
  # against its reference "a b": unigram vectors (log 2) and (log 2, log 2)
  # have cosine 1/sqrt(2), length penalty exp(-(1 - 2)^2 / (2 * 6^2)); no
  # bigrams or longer. Image B is exact: cosine 1 for unigrams and bigrams.
  # CIDEr-D = 10 * mean over n = 1..4, then the mean over images.
  score_a = 10 * (math.exp(-1 / 72) / math.sqrt(2)) / 4
  score_b = 10 * (1 + 1) / 4
  metrics = caption_metrics({"A": "a", "B": "c d"},
                            {"A": ["a b"], "B": ["c d"]}, meteor=False)
  assert metrics["CIDEr-D"] == pytest.approx((score_a + score_b) / 2,
                                             abs=1e-9)


def test_empty_candidate_is_scored_not_a_crash():
  refs = {"A": ["a b c d"], "B": ["c d e f"]}
  metrics = caption_metrics({"A": "", "B": "c d e f"}, refs,
                            meteor=shutil.which("java") is not None)
  assert 0 < metrics["BLEU-1"] < 1
  assert metrics["CIDEr-D"] == pytest.approx(10 * 4 / 4 / 2)  # B alone.
  assert any("SPICE" in note for note in metrics["notes"])
  assert caption_metrics({}, {}) == {"notes": ["no captions to score"]}
  with pytest.raises(ValueError, match="no references"):
    caption_metrics({"A": "a"}, {})


def test_a_kept_final_period_is_one_free_unigram_match():
  # "a cat runs" against "A dog runs .": 2 of 3 words match without
  # punctuation; with the period kept, 3 of 4. Equal lengths: no brevity
  # penalty, so BLEU-1 is the unigram precision.
  scores = bleu_by_protocol([{"generated": "a cat runs",
                              "references": ["A dog runs ."]}])
  assert scores["library"][0] == pytest.approx(2 / 3, abs=1e-6)
  assert scores["period kept"][0] == pytest.approx(3 / 4, abs=1e-6)
  # Bigrams: none of "a cat", "cat runs" is the reference's; with the
  # period, "runs ." is: 1 of 3, so BLEU-2 = sqrt(3/4 * 1/3) = 1/2.
  assert scores["library"][1] < 1e-6
  assert scores["period kept"][1] == pytest.approx(0.5, abs=1e-6)


def test_brevity_takes_the_nearest_reference_and_agrees_with_bleu_1():
  # 3 words against references of 4 and 7: the nearer, 4. 4 words against
  # 3 and 5: a tie, the shorter, 3. Ratio (3 + 4) / (4 + 3) = 1: no penalty.
  records = [{"generated": "a dog runs", "references": [
                 "A dog runs fast .", "a brown dog runs on the grass"]},
             {"generated": "two cats sleep inside", "references": [
                 "two cats sleep", "two cats sleep on beds"]}]
  assert brevity(records) == (1.0, 1.0)
  # The first alone: 3 / 4, BP exp(1 - 4 / 3); all three of its words are
  # in the references, so BLEU-1 is the penalty itself.
  ratio, penalty = brevity(records[:1])
  assert ratio == 0.75 and penalty == pytest.approx(math.exp(-1 / 3))
  assert bleu_by_protocol(records[:1])["library"][0] == pytest.approx(
      penalty, abs=1e-6)


def test_validated_and_unseen_photos_are_scored_apart(tmp_path):
  # The first two records (the validated photos) are their references word
  # for word, the last two share no word with theirs.
  records = [{"generated": "a dog runs on the grass",
              "references": ["a dog runs on the grass"]},
             {"generated": "two cats sleep on a bed",
              "references": ["two cats sleep on a bed"]},
             {"generated": "red car", "references": ["a man rides a bike"]},
             {"generated": "blue sky", "references": ["children play in water"]}]
  parts = scores_by_part(records, 2, meteor=False)
  assert parts["validated"]["images"] == parts["unseen"]["images"] == 2
  assert parts["validated"]["BLEU-1"] == pytest.approx(1.0)
  assert parts["validated"]["BLEU-4"] == pytest.approx(1.0)
  assert parts["unseen"]["BLEU-1"] == pytest.approx(0.0, abs=1e-6)
  assert parts["unseen"]["CIDEr-D"] == 0.0
  # A split that leaves nothing unseen is one clear error naming the file.
  path = tmp_path / "captions.json"
  path.write_text(json.dumps(records))
  result = subprocess.run(
      [sys.executable, "-m", "experiments.caption_analysis",
       f"--captions={path}", "--validated_images=4"],
      capture_output=True, text=True, cwd=str(REPO))
  assert result.returncode != 0
  assert f"{path}: --validated_images=4 leaves no photo outside " \
      "validation (4 records)" in result.stderr


def test_copies_of_training_captions_are_counted_after_tokenisation():
  records = [{"generated": "a dog runs", "references": ["x"]},
             {"generated": "A dog runs .", "references": ["x"]},
             {"generated": "a dog runs fast", "references": ["x"]},
             {"generated": "two cats", "references": ["x"]}]
  training = ["A dog runs!", "Two cats sleep ."]
  assert copied_share(records, training) == 0.5


def test_captions_file_that_is_not_an_evaluation_is_one_clear_error(tmp_path):
  path = tmp_path / "captions.json"
  path.write_text(json.dumps({"generated": "a dog"}))
  with pytest.raises(InputError, match=r"captions\.json: expected a non-empty"):
    read_records(str(path))
  path.write_text("[{")
  with pytest.raises(InputError, match=r"captions\.json:1: not JSON"):
    read_records(str(path))


@pytest.mark.skipif(shutil.which("java") is None,
                    reason="METEOR needs Java, which is not installed")
def test_meteor_with_java():
  refs = {"A": ["a red circle above a blue square"]}
  same = caption_metrics({"A": refs["A"][0]}, refs)
  other = caption_metrics({"A": "a green triangle"}, refs)
  assert same["METEOR"] == pytest.approx(1.0)
  assert 0 <= other["METEOR"] < same["METEOR"]


def test_nearest_orders_by_cosine_similarity():
  gallery = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)
  query = np.array([[2, 0.1], [-1, -0.1]], np.float32)
  np.testing.assert_array_equal(nearest(query, gallery, 3),
                                [[0, 2, 1], [3, 1, 2]])


def test_consensus_prefers_the_caption_the_others_agree_with():
  candidates = [c.split() for c in ["a red circle above a blue square",
                                    "a red circle above a square",
                                    "a green triangle",
                                    "a red circle above a blue square"]]
  corpus = CiderD({"x": ["a green circle".split()], "y": ["a square".split()],
                   "z": ["a red triangle".split()]})
  for consensus, scorer in (("cider", None), ("cider", corpus),
                            ("bleu", None)):
    scores = consensus_scores(candidates, consensus, scorer)
    assert scores.shape == (4,)
    assert scores[0] == pytest.approx(scores[3])
    assert scores[0] > scores[1] > scores[2] >= 0


def test_pairwise_cider_d_averages_to_the_multi_reference_score():
  tokens = lambda text: [c.split() for c in text.split(",")]
  corpus = CiderD({"x": tokens("a red circle above a square,a red circle"),
                   "y": tokens("a blue square below a green triangle"),
                   "z": tokens("two circles,a circle and a square")})
  candidate = "a red circle above a green square".split()
  pairwise = corpus.pairwise([candidate] + tokens(
      "a red circle above a square,a red circle"))
  assert pairwise.shape == (3, 3)
  expected = corpus.score(["x"], [candidate])[0]
  assert expected > 0
  assert pairwise[0, 1:].mean() == pytest.approx(expected, rel=1e-9)
  # A caption against itself scores 10 per n-gram order it has, / 4.
  assert np.diag(pairwise) == pytest.approx([10.0, 10.0, 7.5])


def test_retrieval_returns_a_neighbours_consensus_caption():
  features = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1]], np.float32)
  captions = [["a red circle", "a red circle"], ["a red circle", "a circle"],
              ["a blue square", "a blue square"]]
  retrieval = ConsensusRetrieval(features, captions, neighbours=2)
  out = retrieval.caption(np.array([[1, 0.05, 0], [0, 0.1, 1]], np.float32))
  assert out[0] == "a red circle"
  assert out[1] in ("a blue square", "a red circle", "a circle")
  with pytest.raises(InputError, match="neighbours must be in 1..3"):
    ConsensusRetrieval(features, captions, neighbours=4)
  with pytest.raises(InputError, match="2 feature rows but 3"):
    ConsensusRetrieval(features[:2], captions)
