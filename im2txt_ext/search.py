"""The one caption search: greedy, sampling and batched beam search.

Written once against the decoder-step contract (``initial_state``, ``step``;
see ``im2txt_ext.models.decoder``), so it serves every decoder, in memory or
inside an exported SavedModel. Each search is one ``tf.while_loop``: no
Python round trip per step, and it stops as soon as no caption it could
still find would change its result.

Shape letters: B images, K beams (or captions) per image, V words, T most
words per caption, L image locations.

Results are ``SearchResult`` tuples (k captions per image):
  ids: int32 [B, k, T], word ids after <start>, <end> included, then <pad>;
  log_probs: float32 [B, k], sum of the words' log-probabilities;
  scores: float32 [B, k], log_probs over the length normalisation (ranks
    beam search's captions; log_probs elsewhere);
  lengths: int32 [B, k], words including <end>;
  attention: float32 [B, k, T, L] for attention decoders, else None.

The special words come as one ``SpecialTokens`` value, ``tokens``
(``Vocabulary.special_tokens()``; default: ids 1, 2, 0 for <start>, <end>,
<pad> and no banned word). Every search applies the same rules to the
logits of each step, before they are normalised (so the log-probabilities
are those of the distribution the search draws from, as the banned words'
renormalisation always was):
  tokens.banned: words it never emits (the library's captioners ban <unk>;
    <start> and <pad> are never emitted);
  min_length: <end> is banned until the caption has this many words;
  bad_ending_ids: <end> is banned right after these words ("a", "with",
    ...; self-critical.pytorch's ``remove_bad_endings``);
  no_repeat_ngram_size: n > 0 bans a word that would repeat an n-gram of
    the caption (self-critical.pytorch's ``block_trigrams`` is n = 3);
  repetition_penalty: theta; the logit l of a word already in the caption
    becomes l / theta if l > 0 else l * theta (Keskar et al. 2019, CTRL).
Each of them may be a Python value or a tensor (an exported signature's
input); a Python value that turns a rule off builds none of its ops.
"""

import collections
import functools

import tensorflow as tf

from im2txt_ext.data.vocabulary import Vocabulary

SearchResult = collections.namedtuple(
    "SearchResult", "ids log_probs scores lengths attention")

NEG_INF = -1e9
LENGTH_NORMALIZATIONS = ("plain", "gnmt")
MAX_LENGTH = 500  # The longest search; a decoder may allow fewer steps.
PLAIN_TOKENS = Vocabulary.special_tokens(ban_unknown=False)


class StepCounter:
  """A decoder (step contract) that counts the steps run through it, in
  graph mode too: how many decoder steps a search took (``steps``, an int32
  variable)."""

  def __init__(self, decoder):
    self.decoder, self.has_attention = decoder, decoder.has_attention
    self.vocab_size = decoder.vocab_size
    self.max_steps = longest_caption(decoder)
    self.static_state = getattr(decoder, "static_state", ())
    self.initial_state = decoder.initial_state
    self.steps = tf.Variable(0)

  def step(self, word_ids, state, training=False):
    self.steps.assign_add(1)
    return self.decoder.step(word_ids, state, training)


def longest_caption(decoder):
  """The most steps a search may run ``decoder``: its ``max_steps`` where it
  has a bound (a Transformer's cache length), else MAX_LENGTH."""
  return getattr(decoder, "max_steps", MAX_LENGTH)


def emitted_words(decoder, tokens=PLAIN_TOKENS):
  """How many words a search over ``decoder`` may emit: its vocabulary less
  the banned words, <start> and <pad> (None where the decoder does not say
  its vocabulary)."""
  vocab_size = getattr(decoder, "vocab_size", None)
  return None if vocab_size is None else \
      vocab_size - len(banned_words(tokens))


def banned_words(tokens):
  """The words a search never emits: ``tokens.banned``, <start> and
  <pad>."""
  return tuple(sorted(set(tokens.banned) | {tokens.start, tokens.pad}))


def _tile(structure, times):
  """Repeats every [B, ...] tensor to [B * times, ...], image-major."""
  return tf.nest.map_structure(lambda x: tf.repeat(x, times, axis=0),
                               structure)


def _reorder_beams(state, rows, static=()):
  """The state rows of the beams' parents (``rows`` int32 [B * K]); the
  entries named in ``static`` are the same for every beam of an image and
  at every step, so they are left as they are (for an attending decoder,
  the image's features and keys: most of the state)."""
  gather = lambda x: tf.nest.map_structure(  # noqa: E731
      lambda y: tf.gather(y, rows), x)
  if not isinstance(state, dict):
    return gather(state)
  return {key: value if key in static else gather(value)
          for key, value in state.items()}


def _is_off(value, off):
  """Whether ``value`` is a Python value equal to ``off`` (a rule that is
  off builds no ops); tensors are never off."""
  return not tf.is_tensor(value) and value == off


def _in_range(value, low, high, message, shown=()):
  """Checks low <= value <= high (None: no bound). Python values raise
  ValueError at once; tensors (e.g. the inputs of an exported signature)
  give an assertion op, returned, that raises InvalidArgumentError with the
  same message when run."""
  if tf.is_tensor(value) or tf.is_tensor(high):
    ok = tf.constant(True)
    if low is not None:
      ok = tf.logical_and(ok, value >= low)
    if high is not None:
      ok = tf.logical_and(ok, value <= high)
    return [tf.debugging.Assert(ok, [tf.strings.format(
        message, (*shown, value))])]
  if (low is not None and not value >= low) or \
     (high is not None and not value <= high):
    raise ValueError(message.format(*shown, value))
  return []


def _check(beam_size, max_length, top_k=None, words=None,
           longest=MAX_LENGTH, top_k_name="top_k"):
  """Checks the search sizes; returns the assertions to run in the graph.

  ``words``: how many words the search may emit (the vocabulary less the
  banned words), the most beams it can keep; None: not checked.
  ``longest``: the largest max_length (``longest_caption(decoder)``).
  ``top_k_name``: what the caller calls top_k in its messages (the
  export's signatures and the web API: ``k``).
  """
  top_k = beam_size if top_k is None else top_k
  for value, name in ((beam_size, "beam size"), (max_length, "max length"),
                      (top_k, top_k_name)):
    if not tf.is_tensor(value) and not isinstance(value, int):
      raise ValueError(f"{name} must be an integer, got {value!r}")
  beam_rule = (1, 1 << 30, "beam size must be a positive integer, got {}",
               ()) if words is None else \
      (1, words, "beam size must be a positive integer up to {}, the words "
       "the search may emit, got {}", (words,))
  return (_in_range(beam_size, *beam_rule) +
          _in_range(max_length, 1, longest, "max length must be in 1..{}, "
                    "got {}", (longest,)) +
          _in_range(top_k, 1, beam_size,
                    top_k_name + " must be in 1..{}, got {}", (beam_size,)))


def _check_rules(rules):
  """Checks the options of ``Rules``; returns the graph's assertions."""
  return (_in_range(rules.min_length, 0, None,
                    "min length must be >= 0, got {}") +
          _in_range(rules.no_repeat_ngram_size, 0, None,
                    "no_repeat_ngram_size must be >= 0, got {}") +
          _in_range(rules.repetition_penalty, 1e-6, None,
                    "repetition penalty must be > 0, got {}"))


def _after(asserts, values):
  """``values`` (a tuple) with its tensors waiting for ``asserts``."""
  if not asserts:
    return values
  with tf.control_dependencies(asserts):
    return tuple(tf.identity(x) if tf.is_tensor(x) else x for x in values)


Rules = collections.namedtuple("Rules", "end_id banned_ids min_length "
                               "bad_ending_ids no_repeat_ngram_size "
                               "repetition_penalty")


def _word_mask(ids, use, vocab_size):
  """bool [N, V]: the words ids[n, j] for which use[n, j] holds.

  ids, use: [N, T]."""
  rows = tf.broadcast_to(tf.range(tf.shape(ids)[0])[:, None], tf.shape(ids))
  indices = tf.reshape(tf.stack([rows, ids], -1), [-1, 2])
  hits = tf.tensor_scatter_nd_max(
      tf.zeros([tf.shape(ids)[0], vocab_size], tf.int32), indices,
      tf.reshape(tf.cast(use, tf.int32), [-1]))
  return hits > 0


def _apply_rules(logits, rules, t, words, ids, runs):
  """The logits [N, V] of a step with ``rules`` applied (module doc).

  t: int32 scalar, words in the captions so far; words: int32 [N], the
  last word fed (<start> at t = 0); ids: int32 [N, T], the captions so far;
  runs: int32 [N, T] from ``_ngram_runs`` (None where n-grams are not
  blocked).
  """
  logits = tf.cast(logits, tf.float32)
  vocab_size = tf.shape(logits)[-1]
  vocab = tf.range(vocab_size)
  written = tf.range(tf.shape(ids)[-1])[None] < t  # [1, T]
  if not _is_off(rules.repetition_penalty, 1.0):
    theta = tf.cast(rules.repetition_penalty, tf.float32)
    seen = _word_mask(ids, tf.broadcast_to(written, tf.shape(ids)),
                      vocab_size)
    logits = tf.where(seen, tf.where(logits > 0, logits / theta,
                                     logits * theta), logits)
  banned = []  # bool [V] or [N, V]: one tf.where over the logits for all.
  if rules.banned_ids:
    banned.append(tf.reduce_any(vocab[:, None] == tf.constant(
        list(rules.banned_ids), tf.int32)[None], axis=1))
  if runs is not None:
    n = rules.no_repeat_ngram_size
    banned.append(_word_mask(ids, written & (runs >= n - 1) & (n > 0),
                             vocab_size))
  no_end = []  # bool [N]: captions that may not end now.
  if not _is_off(rules.min_length, 0):
    no_end.append(tf.fill(tf.shape(words), t < rules.min_length))
  if tf.is_tensor(rules.bad_ending_ids) or len(rules.bad_ending_ids):
    bad = tf.reshape(tf.cast(rules.bad_ending_ids, tf.int32), [-1])
    no_end.append(tf.reduce_any(words[:, None] == bad[None], axis=1) &
                  (t > 0))
  if no_end:
    banned.append(functools.reduce(tf.logical_or, no_end)[:, None] &
                  (vocab == rules.end_id)[None])
  if not banned:
    return logits
  return tf.where(functools.reduce(tf.logical_or, banned), NEG_INF, logits)


def _ngram_runs(ids, runs, words):
  """Updates ``runs`` after ``words`` [N] were written at position t.

  runs[n, j] is how many words before position j equal the words before
  the next position (the caption's end): the n-gram ending at j repeats
  the last n - 1 words plus ids[n, j] when runs[n, j] >= n - 1. Adding a
  word w: runs'[j] = runs[j - 1] + 1 where ids[j - 1] == w, else 0.
  """
  before = tf.pad(ids[:, :-1], [[0, 0], [1, 0]], constant_values=-1)
  runs_before = tf.pad(runs[:, :-1], [[0, 0], [1, 0]])
  return tf.where(before == words[:, None], runs_before + 1, 0)


def _normalizer(lengths, length_penalty, length_normalization):
  """The length normalisation lp(|Y|) that scores divide log-probs by:
  |Y|^alpha ("plain") or ((5 + |Y|) / 6)^alpha ("gnmt"; Wu et al. 2016,
  eq. 14). Both grow with |Y| for alpha >= 0."""
  lengths = tf.cast(lengths, tf.float32)
  if length_normalization == "gnmt":
    lengths = (5.0 + lengths) / 6.0
  return tf.pow(lengths, tf.cast(length_penalty, tf.float32))


def _score(log_probs, lengths, length_penalty, length_normalization):
  """log_probs / lp(lengths); NEG_INF for the impossible (log_probs at
  NEG_INF, e.g. a banned word's)."""
  return tf.where(log_probs > NEG_INF / 2, log_probs / _normalizer(
      lengths, length_penalty, length_normalization), NEG_INF)


def _write(ids, t, words):
  """ids [..., T] with position t set to ``words`` [...]."""
  column = tf.one_hot(t, tf.shape(ids)[-1], dtype=tf.int32)
  return ids * (1 - column) + words[..., None] * column


def beam_search(decoder, features, beam_size=3, max_length=20,
                length_penalty=0.0, top_k=None, tokens=PLAIN_TOKENS,
                length_normalization="plain",
                min_length=0, bad_ending_ids=(), no_repeat_ngram_size=0,
                repetition_penalty=1.0, diversity_groups=1,
                diversity_strength=0.0):
  """Batched beam search over a batch of images.

  K live beams per image always, as im2txt keeps them: a beam that emits
  <end> leaves the live beams for a pool of the ``top_k`` best finished
  captions per image, ranked by their final score log p(Y) / lp(|Y|)
  (``_normalizer``), and the K best extensions by other words stay live.
  At ``max_length`` the live beams count as finished. The search stops
  early, for each image, once its pool is full and no live beam can beat
  the worst caption in it: a live beam's log-probability only falls, so
  its best possible score is log p / lp(max_length) (lp grows with the
  length). The early stop is exact: the result is the full search's.

  Diverse beam search (Vijayakumar et al. 2018): with G
  ``diversity_groups`` the K beams form G groups of K / G, each a beam
  search of its own whose choices at a step are penalised by
  ``diversity_strength`` (lambda) times the number of times the groups
  before it chose the same word at that step (Hamming diversity). The
  penalty only selects beams; the pool is shared and ranks by score.

  Args:
    decoder: an object with the decoder-step contract.
    features: float32 [B, D] or [B, L, D] image features.
    beam_size: int or int32 scalar tensor. K beams per image.
    max_length: int or int32 scalar tensor. Most words per caption, <end>
      included.
    length_penalty: float or float32 scalar tensor >= 0. The exponent alpha
      of the length normalisation (0 = plain log-probability).
    top_k: int or int32 scalar tensor <= beam_size. Captions returned per
      image (default: all K).
    tokens: SpecialTokens, the special words and the banned ones.
    min_length, bad_ending_ids, no_repeat_ngram_size, repetition_penalty:
      the rules of the module doc.
    length_normalization: "plain" (|Y|^alpha) or "gnmt" (((5 + |Y|) /
      6)^alpha).
    diversity_groups: int or int32 scalar tensor, G >= 1 dividing K.
    diversity_strength: float or float32 scalar tensor, lambda >= 0.
  """
  if length_normalization not in LENGTH_NORMALIZATIONS:
    raise ValueError(f"length normalization must be one of "
                     f"{', '.join(LENGTH_NORMALIZATIONS)}, got "
                     f"{length_normalization!r}")
  if not tf.is_tensor(diversity_groups) and \
     not isinstance(diversity_groups, int):
    raise ValueError("diversity groups must be an integer, got "
                     f"{diversity_groups!r}")
  rules = Rules(tokens.end, banned_words(tokens), min_length, bad_ending_ids,
                no_repeat_ngram_size, repetition_penalty)
  asserts = (_check(beam_size, max_length, top_k,
                    longest=longest_caption(decoder)) +
             _check_rules(rules) +
             _in_range(length_penalty, 0.0, None,
                       "length penalty must be >= 0, got {}") +
             _in_range(diversity_strength, 0.0, None,
                       "diversity strength must be >= 0, got {}") +
             _in_range(diversity_groups, 1, None, "diversity groups must "
                       "be a positive integer, got {}") +
             _in_range(beam_size % diversity_groups, 0, 0,
                       "beam size must be a multiple of the diversity "
                       "groups ({}); the remainder is {}",
                       (diversity_groups,)))
  k, max_length, top_k = _after(asserts, (beam_size, max_length, top_k))
  top_k = k if top_k is None else top_k
  groups = diversity_groups
  one_group = _is_off(groups, 1)
  group_size = k // groups
  batch_size = tf.shape(features)[0]
  num_locations = tf.shape(features)[1] if decoder.has_attention else 1
  static_state = getattr(decoder, "static_state", ())
  score = lambda log_probs, lengths: _score(  # noqa: E731
      log_probs, lengths, length_penalty, length_normalization)

  # Only the first beam of each group is alive at the start, so the first
  # step draws distinct words from it rather than copies of the same one.
  first_only = tf.where(tf.range(k) % group_size == 0, 0.0, NEG_INF)  # [K]
  live = dict(
      words=tf.fill([batch_size * k], tokens.start),
      state=_tile(decoder.initial_state(features), k),
      log_probs=tf.tile(first_only[None], [batch_size, 1]),
      ids=tf.fill([batch_size, k, max_length], tokens.pad),
      attention=tf.zeros([batch_size, k, max_length, num_locations]))
  if not _is_off(no_repeat_ngram_size, 0):
    live["runs"] = tf.zeros([batch_size, k, max_length], tf.int32)
  pool = dict(
      ids=tf.fill([batch_size, top_k, max_length], tokens.pad),
      log_probs=tf.fill([batch_size, top_k], NEG_INF),
      scores=tf.fill([batch_size, top_k], NEG_INF),
      lengths=tf.zeros([batch_size, top_k], tf.int32),
      attention=tf.zeros([batch_size, top_k, max_length, num_locations]))
  beam_offsets = tf.range(batch_size)[:, None] * k  # [B, 1]

  def into_pool(pool, candidates):
    """The ``top_k`` best by score of the pool and the candidates (ties
    keep the pool's)."""
    merged = {key: tf.concat([pool[key], candidates[key]], 1)
              for key in pool}
    _, best = tf.math.top_k(merged["scores"], top_k)
    return {key: tf.gather(x, best, batch_dims=1)
            for key, x in merged.items()}

  def select_group(g, logits, log_norm, log_probs, chosen):
    """Parents (beam index in the image), words and new log-probabilities,
    each [B, Kg], of the Kg best live extensions of group g; ``chosen``
    float32 [B, V] (None: zeros): how often the groups before it chose
    each word at this step.

    logits [B, K, V] and log_norm [B, K, 1]: the words' log-probabilities
    are logits - log_norm; <end> is no live extension."""
    if not one_group:
      beams = g * group_size + tf.range(group_size)
      logits, log_norm, log_probs = (tf.gather(x, beams, axis=1) for x in
                                     (logits, log_norm, log_probs))
    penalised = logits if chosen is None else \
        logits - tf.cast(diversity_strength, tf.float32) * chosen[:, None]
    # The Kg best extensions of the group are among the Kg best of each of
    # its beams other than <end>: take the Kg + 1 best first (top-k over V
    # per beam), drop <end>, then take the best over the group's
    # Kg * (Kg + 1) per image, instead of sorting Kg * V candidates.
    best_logits, best_words = tf.math.top_k(penalised, tf.minimum(
        group_size + 1, tf.shape(logits)[-1]))
    is_end = best_words == tokens.end
    ranking = tf.where(is_end, NEG_INF, best_logits - log_norm)
    if chosen is not None:  # The log-probabilities, less the penalty.
      best_logits = tf.gather(logits, best_words, batch_dims=2)
    candidates = tf.where(is_end, NEG_INF, best_logits - log_norm)
    _, flat = tf.math.top_k(tf.reshape(log_probs[..., None] + ranking,
                                       [batch_size, -1]), group_size)
    pick = lambda x: tf.gather(  # noqa: E731
        tf.reshape(x, [batch_size, -1]), flat, batch_dims=1)
    return (flat // tf.shape(best_words)[-1] + g * group_size,
            pick(best_words), pick(log_probs[..., None] + candidates))

  def select(logits, log_norm, log_probs):
    """``select_group`` of every group in turn, each penalised for the
    words of those before it: parents, words, log-probabilities [B, K]."""
    if one_group:
      return select_group(0, logits, log_norm, log_probs, None)
    picked = lambda words: tf.reduce_sum(  # noqa: E731
        tf.one_hot(words, tf.shape(logits)[-1]), axis=1)
    if isinstance(groups, int):
      chosen, out = None, []
      for g in range(groups):
        out.append(select_group(g, logits, log_norm, log_probs, chosen))
        chosen = picked(out[-1][1]) + (0.0 if chosen is None else chosen)
      return tuple(tf.concat(x, 1) for x in zip(*out))

    def group_body(g, chosen, arrays):
      out = select_group(g, logits, log_norm, log_probs, chosen)
      return (g + 1, chosen + picked(out[1]),
              tuple(a.write(g, x) for a, x in zip(arrays, out)))
    arrays = tuple(tf.TensorArray(dtype, groups) for dtype in
                   (tf.int32, tf.int32, tf.float32))
    _, _, arrays = tf.while_loop(
        lambda g, *_: g < groups, group_body, (
            tf.constant(0), tf.zeros([batch_size, tf.shape(logits)[-1]]),
            arrays))
    # [G, B, Kg] -> [B, K], group-major as the beams.
    return tuple(tf.reshape(tf.transpose(a.stack(), [1, 0, 2]),
                            [batch_size, k]) for a in arrays)

  def body(t, live, pool):
    out = decoder.step(live["words"], live["state"])
    runs = live.get("runs")
    flat = lambda x: tf.reshape(x, [batch_size * k, -1])  # noqa: E731
    logits = tf.reshape(_apply_rules(
        out.logits, rules, t, live["words"], flat(live["ids"]),
        None if runs is None else flat(runs)), [batch_size, k, -1])
    log_norm = tf.reduce_logsumexp(logits, -1, keepdims=True)  # [B, K, 1]
    attention = live["attention"]
    if out.attention is not None:
      column = tf.one_hot(t, max_length)[:, None]  # [T, 1]
      attention += tf.reshape(out.attention, [batch_size, k, 1, -1]) * column

    # Beams that end now leave for the pool.
    ended = live["log_probs"] + logits[..., tokens.end] - log_norm[..., 0]
    if not one_group:  # Groups may share a caption: it ends once.
      ended = tf.where(_repeats(live["ids"], live["log_probs"]), NEG_INF,
                       ended)
    pool = into_pool(pool, dict(
        ids=_write(live["ids"], t, tf.fill([batch_size, k], tokens.end)),
        log_probs=ended, scores=score(ended, t + 1),
        lengths=tf.fill([batch_size, k], t + 1), attention=attention))

    # The others compete for the K live slots.
    parents, words, log_probs = select(logits, log_norm, live["log_probs"])
    rows = tf.reshape(beam_offsets + parents, [-1])
    ids = _write(tf.gather(live["ids"], parents, batch_dims=1), t, words)
    new = dict(words=tf.reshape(words, [-1]),
               state=_reorder_beams(out.state, rows, static_state),
               log_probs=log_probs, ids=ids,
               attention=tf.gather(attention, parents, batch_dims=1))
    if runs is not None:
      new["runs"] = tf.reshape(_ngram_runs(
          flat(ids), tf.gather(flat(runs), rows), new["words"]),
          tf.shape(runs))
    return t + 1, new, pool

  def unsettled(t, live, pool):
    """Steps left, and an image whose result could still change."""
    best_possible = score(tf.reduce_max(live["log_probs"], 1), max_length)
    return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(
        _settled(best_possible, pool["scores"]))))

  t, live, pool = tf.while_loop(
      unsettled, body, (tf.constant(0), live, pool),
      shape_invariants=(tf.TensorShape([]), {
          key: _invariants(x, 1 if key in ("words", "state") else 2)
          for key, x in live.items()}, _invariants(pool, 2)),
      maximum_iterations=max_length)
  # At max_length the live beams count as finished (after an early stop
  # none of them can enter the pool).
  pool = into_pool(pool, dict(
      ids=live["ids"], log_probs=live["log_probs"],
      scores=score(live["log_probs"], t), lengths=tf.fill(
          [batch_size, k], t), attention=live["attention"]))
  return SearchResult(pool["ids"], pool["log_probs"], pool["scores"],
                      pool["lengths"], pool["attention"]
                      if decoder.has_attention else None)


def _repeats(ids, log_probs):
  """bool [B, K]: whether a live beam before each (ids [B, K, T],
  log_probs [B, K]) holds the same words."""
  same = tf.reduce_all(ids[:, :, None] == ids[:, None], -1)  # [B, K, K]
  beams = tf.range(tf.shape(ids)[1])
  before = beams[None, :] < beams[:, None]  # [K, K]: j before i.
  alive = log_probs > NEG_INF / 2
  return tf.reduce_any(same & before & alive[:, None], -1)


def _settled(best_possible, pool_scores):
  """bool [B]: whether each image's pool of finished captions is full and
  no live beam can beat its worst (best_possible [B]: the best score a live
  beam could still reach; pool_scores [B, k], best first)."""
  worst = pool_scores[:, -1]
  return (worst > NEG_INF / 2) & (best_possible <= worst)


def _invariants(structure, free=1):
  """Shape invariants with the first ``free`` dimensions (batch, beams)
  left free."""
  def free_dims(x):
    shape = x.shape.as_list()
    return tf.TensorShape([None] * free + shape[free:]) if shape else x.shape
  return tf.nest.map_structure(free_dims, structure)


def greedy(decoder, features, max_length=20, tokens=PLAIN_TOKENS, **rules):
  """Most likely word at each step; k = 1 caption per image. ``rules``:
  min_length, bad_ending_ids, no_repeat_ngram_size, repetition_penalty
  (module doc)."""
  return _decode(decoder, features, max_length, lambda logits, t: tf.cast(
      tf.argmax(logits, -1), tf.int32), tokens, **rules)


def sample(decoder, features, max_length=20, temperature=1.0, top_k=0,
           seed=(0, 0), tokens=PLAIN_TOKENS, top_p=1.0, **rules):
  """Samples each word from softmax(logits / temperature).

  Args:
    top_k: int. When > 0, sample only among the k most likely words.
    top_p: float in (0, 1]. Nucleus sampling (Holtzman et al. 2020): sample
      only among the fewest most likely words whose probabilities (after
      the temperature) sum to at least p; 1 = all.
    seed: pair of ints, or an int32 [2] tensor; the same seed gives the same
      captions.
    rules: min_length, bad_ending_ids, no_repeat_ngram_size,
      repetition_penalty (module doc).
  """
  asserts = (_in_range(temperature, 1e-6, None, "temperature must be > 0, "
                       "got {}") +
             _in_range(top_p, 1e-6, 1.0, "top_p must be in (0, 1], got {}") +
             _in_range(top_k, 0, None, "top_k must be >= 0, got {}"))
  temperature, top_p, top_k = _after(asserts, (temperature, top_p, top_k))
  seed = tf.cast(seed, tf.int32)

  def choose(logits, t):
    logits = logits / temperature
    if not _is_off(top_k, 0):
      kth = tf.math.top_k(logits, tf.maximum(top_k, 1)).values[:, -1:]
      logits = tf.where((logits < kth) & (top_k > 0), NEG_INF, logits)
    if not _is_off(top_p, 1.0):
      # Sorted probabilities; a word stays if the words likelier than it
      # sum to less than p (so the likeliest always stays).
      order = tf.argsort(logits, -1, direction="DESCENDING")
      sorted_logits = tf.gather(logits, order, batch_dims=1)
      before = tf.math.cumsum(tf.nn.softmax(sorted_logits), -1,
                              exclusive=True)
      cut = tf.where(before < top_p, sorted_logits, NEG_INF)
      logits = tf.gather(cut, tf.argsort(order, -1), batch_dims=1)
    return tf.cast(tf.random.stateless_categorical(
        logits, 1, seed + tf.stack([t, 0]))[:, 0], tf.int32)
  return _decode(decoder, features, max_length, choose, tokens, **rules)


def _decode(decoder, features, max_length, choose, tokens, min_length=0,
            bad_ending_ids=(), no_repeat_ngram_size=0,
            repetition_penalty=1.0):
  """One-path decoding: ``choose(logits [B, V], t) -> int32 [B]`` per step."""
  rules = Rules(tokens.end, banned_words(tokens), min_length, bad_ending_ids,
                no_repeat_ngram_size, repetition_penalty)
  (max_length,) = _after(_check(1, max_length, longest=longest_caption(
      decoder)) + _check_rules(rules),
                         (max_length,))
  batch_size = tf.shape(features)[0]
  num_locations = tf.shape(features)[1] if decoder.has_attention else 1
  init = dict(
      t=tf.constant(0),
      words=tf.fill([batch_size], tokens.start),
      state=decoder.initial_state(features),
      log_probs=tf.zeros([batch_size]),
      finished=tf.zeros([batch_size], tf.bool),
      lengths=tf.zeros([batch_size], tf.int32),
      ids=tf.fill([batch_size, max_length], tokens.pad),
      attention=tf.zeros([batch_size, max_length, num_locations]))
  if not _is_off(no_repeat_ngram_size, 0):
    init["runs"] = tf.zeros([batch_size, max_length], tf.int32)

  def body(v):
    out = decoder.step(v["words"], v["state"])
    logits = _apply_rules(out.logits, rules, v["t"], v["words"], v["ids"],
                          v.get("runs"))
    alive = tf.logical_not(v["finished"])
    word = tf.where(alive, choose(logits, v["t"]), tokens.pad)
    word_log_prob = tf.gather(logits, word, batch_dims=1) - \
        tf.reduce_logsumexp(logits, -1)
    column = tf.one_hot(v["t"], max_length, dtype=tf.int32)  # [T]
    attention = v["attention"]
    if out.attention is not None:
      attention += out.attention[:, None, :] * tf.cast(
          column, tf.float32)[:, None] * tf.cast(alive, tf.float32)[
              :, None, None]
    new = dict(
        t=v["t"] + 1, words=word, state=out.state,
        log_probs=v["log_probs"] + tf.where(alive, word_log_prob, 0.0),
        finished=tf.logical_or(v["finished"], tf.equal(word, tokens.end)),
        lengths=v["lengths"] + tf.cast(alive, tf.int32),
        ids=_write(v["ids"], v["t"], word),
        attention=attention)
    if "runs" in v:
      new["runs"] = _ngram_runs(new["ids"], v["runs"], word)
    return (new,)

  v = tf.while_loop(
      lambda v: tf.logical_and(v["t"] < max_length,
                               tf.logical_not(tf.reduce_all(v["finished"]))),
      body, (init,), shape_invariants=(_invariants(init),),
      maximum_iterations=max_length)[0]
  lengths = tf.maximum(v["lengths"], 1)
  attention = v["attention"][:, None] if decoder.has_attention else None
  return SearchResult(v["ids"][:, None], v["log_probs"][:, None],
                      v["log_probs"][:, None], lengths[:, None], attention)
