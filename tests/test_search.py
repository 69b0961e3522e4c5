"""Caption search: golden values on a hand-built model, beam 1 == greedy,
partial beams, sampling and argument errors."""

import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext import search
from im2txt_ext.models.decoder import StepOutput
from im2txt_ext.models.show_and_tell import ShowAndTell

PAD, START, END, A, B = 0, 1, 2, 3, 4


class TableDecoder:
  """Fake decoder: p(next word | previous word) from a fixed table."""

  has_attention = False
  vocab_size = 5

  def __init__(self, table):
    self.log_table = tf.math.log(tf.constant(table, tf.float32) + 1e-12)

  def initial_state(self, features):
    return {"dummy": tf.zeros([tf.shape(features)[0], 1])}

  def step(self, word_ids, state, training=False):
    return StepOutput(tf.gather(self.log_table, word_ids), state, None)


#       pad  start end   a     b      previous word:
TABLE = [[1, 0, 0, 0, 0],              # pad
         [0, 0, 0, 0.6, 0.4],          # start: a is likelier than b ...
         [1, 0, 0, 0, 0],              # end
         [0, 0, 0.3, 0.36, 0.34],      # a: ... but a rarely ends,
         [0, 0, 0.9, 0.05, 0.05]]      # b: while b ends almost surely.


def test_beam_search_golden():
  decoder = TableDecoder(TABLE)
  features = tf.zeros([2, 3])
  result = search.beam_search(decoder, features, beam_size=2, max_length=6)
  # Exhaustively, "b <end>" (0.4 * 0.9 = 0.36) is the most likely caption;
  # greedy misses it by taking "a" first.
  np.testing.assert_array_equal(result.ids[:, 0].numpy(),
                                [[B, END, 0, 0, 0, 0]] * 2)
  np.testing.assert_allclose(result.log_probs[:, 0].numpy(),
                             [np.log(0.36)] * 2, rtol=1e-5)
  assert result.lengths[:, 0].numpy().tolist() == [2, 2]
  greedy = search.greedy(decoder, features, max_length=6)
  assert greedy.ids[0, 0].numpy().tolist() == [A] * 6
  np.testing.assert_allclose(float(greedy.log_probs[0, 0]),
                             np.log(0.6) + 5 * np.log(0.36), rtol=1e-5)


def test_beam_search_returns_best_partial_beam_without_end():
  table = [[1, 0, 0, 0, 0], [0, 0, 0, 0.7, 0.3], [1, 0, 0, 0, 0],
           [0, 0, 0, 0.8, 0.2], [0, 0, 0, 0.5, 0.5]]
  result = search.beam_search(TableDecoder(table), tf.zeros([1, 3]),
                              beam_size=3, max_length=4, top_k=2)
  assert result.ids.shape == (1, 2, 4)
  assert result.ids[0, 0].numpy().tolist() == [A, A, A, A]
  np.testing.assert_allclose(float(result.log_probs[0, 0]),
                             np.log(0.7 * 0.8 ** 3), rtol=1e-5)
  assert result.lengths[0].numpy().tolist() == [4, 4]


def test_beam_search_stops_early_when_all_beams_end():
  # Every caption ends after one word, so the loop must stop at step 2
  # although max_length is large: the cost is not 500 steps.
  table = [[1, 0, 0, 0, 0], [0, 0, 0, 0.5, 0.5], [1, 0, 0, 0, 0],
           [0, 0, 1, 0, 0], [0, 0, 1, 0, 0]]
  calls = []

  class Counting(TableDecoder):
    def step(self, word_ids, state, training=False):
      calls.append(1)
      return super().step(word_ids, state, training)

  fn = tf.function(lambda f: search.beam_search(Counting(table), f, 2, 500))
  result = fn(tf.zeros([1, 3]))
  assert result.ids[0, :, :2].numpy().tolist() == [[A, END], [B, END]]
  assert calls == [1]  # Traced once: the step lives inside the while loop.


def best_and_all(decoder, features, beam_size, max_length):
  """{top_k: (SearchResult, decoder steps)} for top_k 1 and beam_size."""
  out = {}
  for top_k in (1, beam_size):
    counter = search.StepCounter(decoder)
    result = tf.function(lambda f, k=top_k: search.beam_search(
        counter, f, beam_size, max_length, top_k=k))(features)
    out[top_k] = result, int(counter.steps.numpy())
  return out


def test_beam_search_stops_once_the_returned_captions_have_ended():
  # With beam 2, "b <end>" (0.36) has ended at step 2 and leads the live
  # "a a" (0.216), which can only fall: top_k=1 is settled after two steps.
  # top_k=2 needs a third: "a b <end>" (0.1836) then beats "a <end>" (0.18)
  # for the second place, and the best live "a a a" (0.078) is below it.
  (best, best_steps), (full, full_steps) = best_and_all(
      TableDecoder(TABLE), tf.zeros([3, 3]), 2, 6).values()
  assert (best_steps, full_steps) == (2, 3)
  np.testing.assert_allclose(full.log_probs[0].numpy(),
                             np.log([0.36, 0.6 * 0.34 * 0.9]), rtol=1e-5)
  np.testing.assert_array_equal(best.ids.numpy(), full.ids[:, :1].numpy())
  np.testing.assert_array_equal(best.log_probs.numpy(),
                                full.log_probs[:, :1].numpy())


class ImageTablesDecoder(TableDecoder):
  """Fake decoder with a transition table per image: features[:, 0] is the
  image's table index."""

  def __init__(self, tables):
    self.log_table = tf.math.log(tf.constant(tables, tf.float32) + 1e-12)

  def initial_state(self, features):
    return {"image": tf.cast(features[:, 0], tf.int32)}

  def step(self, word_ids, state, training=False):
    return StepOutput(tf.gather_nd(self.log_table, tf.stack(
        [state["image"], word_ids], -1)), state, None)


def test_early_stop_keeps_the_best_captions_of_random_tables():
  rng = np.random.default_rng(0)
  tables = rng.dirichlet(np.full(8, 0.5), size=(16, 8))  # [I, V, V]
  tables[:, :, [PAD, START]] = 0
  tables[:, 3:, END] += 0.3  # Every word may end the caption ...
  tables[:, START, END] = 0  # ... but none is empty.
  tables[:, [PAD, END]] = np.eye(8)[PAD]  # After <end>: <pad>.
  tables /= tables.sum(-1, keepdims=True)
  features = tf.constant(np.arange(16)[:, None] * [1.0, 0.0], tf.float32)
  (best, best_steps), (full, full_steps) = best_and_all(
      ImageTablesDecoder(tables), features, 4, 15).values()
  assert best_steps < full_steps
  lengths = best.lengths.numpy().ravel()
  assert lengths.min() < lengths.max() < 15  # Varied, and all ended.
  np.testing.assert_array_equal(best.ids.numpy(), full.ids[:, :1].numpy())
  np.testing.assert_allclose(best.log_probs.numpy(),
                             full.log_probs[:, :1].numpy(), rtol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_beam_one_is_never_worse_than_greedy_on_a_real_decoder(cell):
  # Beam 1 follows the likeliest word other than <end> and keeps the best
  # finished caption apart, so greedy's caption (which ends where <end> is
  # the likeliest word) is among those it sees.
  tf.keras.utils.set_random_seed(3)
  decoder = ShowAndTell(30, embedding_size=8, hidden_size=16, dropout=0.0,
                        cell=cell)
  features = tf.random.normal([5, 4])
  greedy = tf.function(lambda f: search.greedy(decoder, f, 12))(features)
  beam = tf.function(lambda f: search.beam_search(decoder, f, 1, 12))(features)
  gain = beam.log_probs.numpy() - greedy.log_probs.numpy()
  assert (gain >= -1e-4).all() and (gain > 1).any()


def test_beam_search_batched_equals_one_by_one():
  tf.keras.utils.set_random_seed(4)
  decoder = ShowAndTell(30, embedding_size=8, hidden_size=16, dropout=0.0)
  features = tf.random.normal([4, 4])
  batched = search.beam_search(decoder, features, 3, 10)
  for i in range(4):
    single = search.beam_search(decoder, features[i:i + 1], 3, 10)
    np.testing.assert_array_equal(single.ids[0].numpy(),
                                  batched.ids[i].numpy())
  scores = batched.scores.numpy()
  assert (np.diff(scores, axis=1) <= 1e-6).all()  # Best first.


def test_sampling_is_seeded_and_respects_top_k():
  decoder = TableDecoder(TABLE)
  features = tf.zeros([200, 3])
  a = search.sample(decoder, features, 6, seed=(1, 2))
  b = search.sample(decoder, features, 6, seed=(1, 2))
  np.testing.assert_array_equal(a.ids.numpy(), b.ids.numpy())
  first = a.ids[:, 0, 0].numpy()
  assert 0.45 < (first == A).mean() < 0.75  # p(a | start) = 0.6.
  top1 = search.sample(decoder, features, 6, top_k=1, seed=(5, 5))
  np.testing.assert_array_equal(top1.ids.numpy(),
                                search.greedy(decoder, features, 6).ids)


def test_banned_word_is_never_emitted_and_the_rest_renormalised():
  # Ban "a" (the library bans <unk> this way): from <start> only "b" is
  # left, with probability 0.4 / 0.4 = 1, and "b" then ends with 0.9 / 0.95.
  decoder = TableDecoder(TABLE)
  features = tf.zeros([50, 3])
  expected = np.log(0.9 / 0.95)
  no_a = search.PLAIN_TOKENS._replace(banned=(A,))
  beam = search.beam_search(decoder, features, 2, 6, tokens=no_a)
  greedy = search.greedy(decoder, features, 6, tokens=no_a)
  for result in (beam, greedy):
    assert result.ids[0, 0].numpy().tolist()[:2] == [B, END]
    np.testing.assert_allclose(float(result.log_probs[0, 0]), expected,
                               rtol=1e-5)
  sampled = search.sample(decoder, features, 6, seed=(3, 4),
                          tokens=no_a).ids.numpy()
  assert not (sampled == A).any()
  assert (search.sample(decoder, features, 6, seed=(3, 4)).ids.numpy()
          == A).any()  # Without the ban "a" is the likelier first word.


def test_bad_search_arguments():
  decoder = TableDecoder(TABLE)
  with pytest.raises(ValueError, match="beam size must be a positive"):
    search.beam_search(decoder, tf.zeros([1, 3]), beam_size=0)
  with pytest.raises(ValueError, match="max length must be in 1..500"):
    search.beam_search(decoder, tf.zeros([1, 3]), max_length=100000)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    search.sample(decoder, tf.zeros([1, 3]), temperature=0)


def test_a_finished_caption_is_not_evicted_by_live_beams():
  # The case: "<end>" alone (0.15) finishes at the first step; the
  # live "a" (0.8) and its extensions lead it for a while but all end below
  # it (best: "a b <end>", 0.8 * 0.5 * 0.25 = 0.1). A search whose
  # finished beams compete for the K slots loses "<end>" at the second step.
  table = [[1, 0, 0, 0, 0],
           [0, 0, 0.15, 0.8, 0.05],   # start
           [1, 0, 0, 0, 0],           # end
           [0, 0, 0.1, 0.4, 0.5],     # a
           [0, 0, 0.25, 0.4, 0.35]]   # b
  result = search.beam_search(TableDecoder(table), tf.zeros([1, 3]),
                              beam_size=2, max_length=4, top_k=2)
  assert result.ids[0].numpy().tolist() == [[END, 0, 0, 0],
                                            [A, B, END, 0]]
  np.testing.assert_allclose(result.log_probs[0].numpy(),
                             np.log([0.15, 0.1]), rtol=1e-5)
  assert result.lengths[0].numpy().tolist() == [1, 3]


def _log_softmax(logits, banned):
  logits = np.where(np.isin(np.arange(logits.shape[-1]), banned), -np.inf,
                    logits)
  return logits - np.logaddexp.reduce(logits, -1, keepdims=True)


def exhaustive(log_table, max_length, banned, score):
  """Every caption of a Markov table (log p(next | previous) [V, V]) in
  at most ``max_length`` words: those that end with <end>, and those that
  reach max_length without it. [(score, log_prob, ids)], best first."""
  log_p = _log_softmax(log_table, banned)
  out, prefixes = [], [((), 0.0, START)]
  for t in range(max_length):
    grown = []
    for words, lp, last in prefixes:
      for w in range(log_p.shape[0]):
        if w in banned or not np.isfinite(log_p[last, w]):
          continue
        caption = (words + (w,), lp + log_p[last, w], w)
        if w == END:
          out.append(caption)
        elif t + 1 == max_length:
          out.append(caption)
        else:
          grown.append(caption)
    prefixes = grown
  return sorted(((score(lp, len(words)), lp, words)
                 for words, lp, _ in out), key=lambda c: -c[0])


def random_tables(seed, images, vocab):
  rng = np.random.default_rng(seed)
  tables = rng.dirichlet(np.full(vocab, 0.7), size=(images, vocab))
  tables[:, :, [PAD, START]] = 0
  return np.log(tables + 1e-30).astype(np.float32)


class RecordingDecoder:
  """A Markov table per image that records, when run eagerly, the words
  of each beam it is fed (its state carries them: the search reorders it
  with the beams)."""

  has_attention = False

  def __init__(self, log_tables, max_length):
    self.log_tables = tf.constant(log_tables)
    self.vocab_size = log_tables.shape[-1]
    self.max_length = max_length
    self.fed = set()  # (image, words so far)

  def initial_state(self, features):
    n = tf.shape(features)[0]
    return {"image": tf.cast(features[:, 0], tf.int32),
            "words": tf.fill([n, self.max_length + 1], -1)}

  def step(self, word_ids, state, training=False):
    count = tf.reduce_sum(tf.cast(state["words"] >= 0, tf.int32), -1)
    words = tf.tensor_scatter_nd_update(
        state["words"], tf.stack([tf.range(tf.shape(word_ids)[0]), count],
                                 -1), word_ids)
    for image, row in zip(state["image"].numpy(), words.numpy()):
      self.fed.add((int(image), tuple(int(w) for w in row[1:] if w >= 0)))
    logits = tf.gather_nd(self.log_tables,
                          tf.stack([state["image"], word_ids], -1))
    return StepOutput(logits, {"image": state["image"], "words": words},
                      None)


SCORES = {
    "log-prob": dict(),
    "plain 0.7": dict(length_penalty=0.7),
    "gnmt 1.0": dict(length_penalty=1.0, length_normalization="gnmt"),
}


def _score_fn(length_penalty=0.0, length_normalization="plain"):
  def score(log_prob, length):
    norm = (5 + length) / 6 if length_normalization == "gnmt" else length
    return log_prob / norm ** length_penalty
  return score


@pytest.mark.parametrize("scoring", sorted(SCORES))
def test_wide_beam_returns_the_exhaustive_top_k(scoring):
  # V = 6, 4 words: 3 words other than <end> give at most 27 live
  # prefixes, so 27 beams keep them all and the search is exhaustive.
  options = SCORES[scoring]
  tables = random_tables(0, 6, 6)
  features = tf.constant(np.arange(6)[:, None] * [1.0, 0.0], tf.float32)
  banned = (PAD, START)
  result = search.beam_search(RecordingDecoder(tables, 4), features, 27, 4,
                              top_k=5, **options)
  for image in range(6):
    every = exhaustive(tables[image], 4, banned, _score_fn(**options))
    np.testing.assert_allclose(result.scores[image].numpy(),
                               [c[0] for c in every[:5]], rtol=1e-4)
    # The captions are those scores' (a Markov table has ties: the same
    # transitions in another order).
    log_probs = {c[2]: c[1] for c in every}
    got = [tuple(w for w in row if w != PAD)
           for row in result.ids[image].numpy().tolist()]
    np.testing.assert_allclose(result.log_probs[image].numpy(),
                               [log_probs[words] for words in got],
                               rtol=1e-4)
    assert len(set(got)) == 5


@pytest.mark.parametrize("scoring", sorted(SCORES))
@pytest.mark.parametrize("beam_size", [1, 2, 3])
def test_any_beam_returns_the_best_finished_caption_it_saw(beam_size,
                                                           scoring):
  options = SCORES[scoring]
  tables = random_tables(1, 8, 6)
  features = tf.constant(np.arange(8)[:, None] * [1.0, 0.0], tf.float32)
  banned = (PAD, START)
  decoder = RecordingDecoder(tables, 4)
  result = search.beam_search(decoder, features, beam_size, 4, **options)
  score = _score_fn(**options)
  for image in range(8):
    every = {c[2]: c[0] for c in exhaustive(tables[image], 4, banned,
                                            score)}
    seen = [every[words + (END,)] for i, words in decoder.fed
            if i == image and words + (END,) in every]
    seen += [every[words] for i, words in decoder.fed
             if i == image and len(words) == 4 and words in every]
    got = tuple(w for w in result.ids[image, 0].numpy() if w != PAD)
    assert got in every
    np.testing.assert_allclose(float(result.scores[image, 0]), every[got],
                               rtol=1e-4)
    assert every[got] >= max(seen) - 1e-4


@pytest.mark.parametrize("scoring", sorted(SCORES))
def test_early_stop_gives_the_full_search_result(scoring, monkeypatch):
  options = SCORES[scoring]
  tables = np.exp(random_tables(2, 16, 8))
  tables[:, 3:, END] += 1.0  # Captions end soon enough to stop early.
  tables /= tables.sum(-1, keepdims=True)
  features = tf.constant(np.arange(16)[:, None] * [1.0, 0.0], tf.float32)

  def run():
    counter = search.StepCounter(ImageTablesDecoder(tables))
    result = search.beam_search(counter, features, 3, 12, top_k=2,
                                **options)
    return result, int(counter.steps.numpy())
  early, early_steps = run()
  monkeypatch.setattr(search, "_settled", lambda best, pool: tf.zeros_like(
      best, tf.bool))
  full, full_steps = run()
  assert early_steps < full_steps == 12
  for a, b in zip(early, full):
    if a is not None:
      np.testing.assert_array_equal(a.numpy(), b.numpy())


def _searches(decoder, features, **rules):
  """Beam (2 beams), greedy and sampling results under the same rules."""
  return {"beam": search.beam_search(decoder, features, 2, 6, **rules),
          "greedy": search.greedy(decoder, features, 6, **rules),
          "sample": search.sample(decoder, features, 6, seed=(1, 1),
                                  **rules)}


def test_min_length_bans_end_until_that_many_words():
  # Every word ends the caption, so without the rule all have one word.
  table = [[1, 0, 0, 0, 0], [0, 0, 0.2, 0.5, 0.3], [1, 0, 0, 0, 0],
           [0, 0, 0.9, 0.05, 0.05], [0, 0, 0.8, 0.1, 0.1]]
  features = tf.zeros([40, 3])
  for name, result in _searches(TableDecoder(table), features,
                                min_length=2).items():
    lengths = result.lengths[:, 0].numpy()
    assert (lengths >= 3).all(), name  # Two words, then <end>.
  beam = search.beam_search(TableDecoder(table), features[:1], 2, 6,
                            min_length=2)
  # "a a <end>": a and then a again, renormalised without <end>, then
  # <end> (0.5 / 0.8 * 0.05 / 0.1 * 0.9, above "a b <end>"'s ... * 0.8).
  assert beam.ids[0, 0, :3].numpy().tolist() == [A, A, END]
  np.testing.assert_allclose(float(beam.log_probs[0, 0]),
                             np.log(0.5 / 0.8 * 0.5 * 0.9), rtol=1e-5)


def test_bad_endings_keep_end_from_following_those_words():
  # "b <end>" (0.36) is the best caption; with "b" a bad ending the best is
  # "a <end>" (0.18).
  features = tf.zeros([40, 3])
  for name, result in _searches(TableDecoder(TABLE), features,
                                bad_ending_ids=(B,)).items():
    ids = result.ids[:, 0].numpy()
    assert not ((ids[:, :-1] == B) & (ids[:, 1:] == END)).any(), name
  beam = search.beam_search(TableDecoder(TABLE), features[:1], 2, 6,
                            bad_ending_ids=[B])
  assert beam.ids[0, 0, :2].numpy().tolist() == [A, END]
  np.testing.assert_allclose(float(beam.log_probs[0, 0]), np.log(0.18),
                             rtol=1e-5)


def _ngrams(words, n):
  return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_size_blocks_repeated_ngrams(n):
  tf.keras.utils.set_random_seed(5)
  decoder = ShowAndTell(12, embedding_size=8, hidden_size=16, dropout=0.0)
  features = tf.random.normal([8, 4])
  repeats = lambda result: [  # noqa: E731
      len(set(g)) < len(g) for g in (
          _ngrams([w for w in row if w not in (PAD, END)], n)
          for row in result.ids.numpy().reshape(-1, 10))]
  plain = search.beam_search(decoder, features, 3, 10, min_length=10)
  assert any(repeats(plain))  # An untrained model repeats itself.
  for rules in (dict(no_repeat_ngram_size=n),
                dict(no_repeat_ngram_size=tf.constant(n))):
    results = [search.beam_search(decoder, features, 3, 10, **rules),
               search.greedy(decoder, features, 10, **rules),
               search.sample(decoder, features, 10, **rules)]
    assert not any(any(repeats(r)) for r in results)


def test_repetition_penalty_golden():
  # Greedy says "a a a ...". With theta = 2 the seen "a" has its logit
  # (log 0.36 < 0) doubled: 0.36^2 = 0.1296 against b's 0.34, so "b" comes
  # next, and then <end> against the seen a and b at 0.05^2 each.
  result = search.greedy(TableDecoder(TABLE), tf.zeros([1, 3]), 6,
                         repetition_penalty=2.0)
  assert result.ids[0, 0, :3].numpy().tolist() == [A, B, END]
  expected = np.log(0.6) + np.log(0.34 / (0.3 + 0.1296 + 0.34)) + \
      np.log(0.9 / (0.9 + 2 * 0.05 ** 2))
  np.testing.assert_allclose(float(result.log_probs[0, 0]), expected,
                             rtol=1e-4)


def _table_log_prob(table, words):
  log_p, previous = 0.0, START
  for w in words:
    log_p += np.log(table[previous][w])
    previous = w
    if w == END:
      break
  return log_p


def test_diverse_beam_search_groups_choose_different_words():
  # Plain beam 2 keeps "a ..." and "b ..."; two groups of one beam, with a
  # strong penalty, do too, but with weak penalty both groups take "a".
  table = [[1, 0, 0, 0, 0], [0, 0, 0, 0.7, 0.3], [1, 0, 0, 0, 0],
           [0, 0, 0.5, 0.3, 0.2], [0, 0, 0.5, 0.2, 0.3]]
  first_words = lambda r: r.ids[0, :, 0].numpy().tolist()  # noqa: E731
  run = lambda **o: search.beam_search(  # noqa: E731
      TableDecoder(table), tf.zeros([1, 3]), 2, 6, top_k=2, **o)
  assert first_words(run(diversity_groups=2, diversity_strength=0.1)) == \
      [A, A]
  diverse = run(diversity_groups=2, diversity_strength=2.0)
  assert sorted(first_words(diverse)) == [A, B]
  # The log-probabilities reported are the model's, without the penalty.
  for row, log_prob in zip(diverse.ids[0].numpy(),
                           diverse.log_probs[0].numpy()):
    np.testing.assert_allclose(log_prob, _table_log_prob(table, row),
                               rtol=1e-5)
  one_group = run(diversity_groups=1, diversity_strength=2.0)
  np.testing.assert_array_equal(one_group.ids.numpy(), run().ids.numpy())


def test_diverse_beam_search_gives_more_varied_n_best_lists():
  # Captions of at least five words; the plain beams of an untrained model
  # differ by the order of two or three words, the groups' use more.
  tf.keras.utils.set_random_seed(6)
  decoder = ShowAndTell(20, embedding_size=8, hidden_size=16, dropout=0.0)
  features = tf.random.normal([16, 4])
  words = lambda r: np.mean([  # noqa: E731
      len(set(image.ravel()) - {PAD, END}) for image in r.ids.numpy()])
  plain = search.beam_search(decoder, features, 4, 8, min_length=5)
  diverse = search.beam_search(decoder, features, 4, 8, min_length=5,
                               diversity_groups=4, diversity_strength=1.0)
  assert words(diverse) > words(plain) + 2
  for result in (plain, diverse):  # Four different captions per image.
    assert all(len({tuple(c) for c in image}) == 4
               for image in result.ids.numpy())


def test_nucleus_sampling_keeps_the_fewest_likeliest_words():
  # From <start>: a 0.6, b 0.4. With p = 0.5 only "a" is in the nucleus;
  # with p = 0.9 both are.
  features = tf.zeros([300, 3])
  first = lambda p: search.sample(  # noqa: E731
      TableDecoder(TABLE), features, 2, top_p=p, seed=(2, 3)).ids[:, 0, 0]
  assert (first(0.5).numpy() == A).all()
  assert 0.5 < (first(0.9).numpy() == A).mean() < 0.7
  with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
    first(0.0)


def test_rules_as_tensors_give_the_same_captions():
  # An exported signature passes every option as a tensor.
  tf.keras.utils.set_random_seed(7)
  decoder = ShowAndTell(16, embedding_size=8, hidden_size=16, dropout=0.0)
  features = tf.random.normal([6, 4])
  for groups in (1, 2):
    options = dict(length_penalty=0.6, min_length=2, bad_ending_ids=[3, 4],
                   no_repeat_ngram_size=2, repetition_penalty=1.3,
                   diversity_groups=groups, diversity_strength=0.5)
    python = search.beam_search(decoder, features, 4, 9, top_k=2,
                                length_normalization="gnmt", **options)
    as_tensors = tf.function(lambda f, o: search.beam_search(
        decoder, f, tf.constant(4), tf.constant(9), top_k=tf.constant(2),
        length_normalization="gnmt", **o))(
            features, {k: tf.constant(v) for k, v in options.items()})
    for a, b in zip(python, as_tensors):
      if a is not None:
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)


def test_bad_decoding_options():
  decoder, features = TableDecoder(TABLE), tf.zeros([1, 3])
  for options, message in [
      (dict(length_penalty=-1.0), "length penalty must be >= 0"),
      (dict(min_length=-1), "min length must be >= 0"),
      (dict(repetition_penalty=0.0), "repetition penalty must be > 0"),
      (dict(length_normalization="log"), "length normalization must be"),
      (dict(diversity_groups=2, beam_size=3),
       r"multiple of the diversity groups \(2\)"),
      (dict(diversity_strength=-1.0), "diversity strength must be >= 0")]:
    with pytest.raises(ValueError, match=message):
      search.beam_search(decoder, features, **options)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="min length must be >= 0"):
    tf.function(lambda m: search.beam_search(decoder, features, 2, 4,
                                             min_length=m))(tf.constant(-2))
