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
  beam = search.beam_search(decoder, features, 2, 6, banned_ids=(A,))
  greedy = search.greedy(decoder, features, 6, banned_ids=(A,))
  for result in (beam, greedy):
    assert result.ids[0, 0].numpy().tolist()[:2] == [B, END]
    np.testing.assert_allclose(float(result.log_probs[0, 0]), expected,
                               rtol=1e-5)
  sampled = search.sample(decoder, features, 6, seed=(3, 4),
                          banned_ids=(A,)).ids.numpy()
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
                              top_k=5, banned_ids=banned, **options)
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
  result = search.beam_search(decoder, features, beam_size, 4,
                              banned_ids=banned, **options)
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
                                banned_ids=(PAD, START), **options)
    return result, int(counter.steps.numpy())
  early, early_steps = run()
  monkeypatch.setattr(search, "_settled", lambda best, pool: tf.zeros_like(
      best, tf.bool))
  full, full_steps = run()
  assert early_steps < full_steps == 12
  for a, b in zip(early, full):
    if a is not None:
      np.testing.assert_array_equal(a.numpy(), b.numpy())
