"""The one caption search: greedy, sampling and batched beam search.

Written once against the decoder-step contract (``initial_state``, ``step``;
see ``im2txt_ext.models.decoder``), so it serves every decoder, in memory or
inside an exported SavedModel. Each search is one ``tf.while_loop``: no
Python round trip per step, and it stops as soon as the captions it
returns have ended.

Results are ``SearchResult`` tuples (k captions per image):
  ids: int32 [B, k, T], word ids after <start>, <end> included, then <pad>;
  log_probs: float32 [B, k], sum of the words' log-probabilities;
  scores: float32 [B, k], log_probs / length**length_penalty (ranks beams);
  lengths: int32 [B, k], words including <end>;
  attention: float32 [B, k, T, L] for attention decoders, else None.

Every search takes ``banned_ids``: words it never emits (the library's
captioners ban ``<unk>``); the others' probabilities are renormalised.
"""

import collections

import tensorflow as tf

SearchResult = collections.namedtuple(
    "SearchResult", "ids log_probs scores lengths attention")

NEG_INF = -1e9


class StepCounter:
  """A decoder (step contract) that counts the steps run through it, in
  graph mode too: how many decoder steps a search took (``steps``, an int32
  variable)."""

  def __init__(self, decoder):
    self.decoder, self.has_attention = decoder, decoder.has_attention
    self.vocab_size = decoder.vocab_size
    self.initial_state = decoder.initial_state
    self.steps = tf.Variable(0)

  def step(self, word_ids, state, training=False):
    self.steps.assign_add(1)
    return self.decoder.step(word_ids, state, training)


def emitted_words(decoder, banned_ids=()):
  """How many words a search over ``decoder`` may emit: its vocabulary less
  the banned words (None where the decoder does not say its vocabulary)."""
  vocab_size = getattr(decoder, "vocab_size", None)
  return None if vocab_size is None else vocab_size - len(set(banned_ids))


def _tile(structure, times):
  """Repeats every [B, ...] tensor to [B * times, ...], image-major."""
  return tf.nest.map_structure(lambda x: tf.repeat(x, times, axis=0),
                               structure)


def _ban(logits, banned_ids):
  """Logits [N, V] with the ``banned_ids`` columns set to NEG_INF."""
  if not banned_ids:
    return logits
  vocab = tf.range(tf.shape(logits)[-1])
  banned = tf.reduce_any(vocab[:, None] == tf.constant(
      list(banned_ids), tf.int32)[None], axis=1)  # [V]
  return tf.where(banned, tf.cast(NEG_INF, logits.dtype), logits)


def _gather_rows(structure, rows):
  return tf.nest.map_structure(lambda x: tf.gather(x, rows), structure)


def _check(beam_size, max_length, top_k=None, words=None):
  """Checks the search sizes; returns the assertions to run in the graph.

  ``words``: how many words the search may emit (the vocabulary less the
  banned words), the most beams it can keep; None: not checked.
  Python values raise ValueError at once. Scalar int32 tensors (e.g. the
  inputs of an exported signature) give assertion ops instead, which raise
  InvalidArgumentError with the same message when run.
  """
  top_k = beam_size if top_k is None else top_k
  beam_rule = (beam_size, 1, 1 << 30, "beam size must be a positive "
               "integer, got {}", ()) if words is None else \
      (beam_size, 1, words, "beam size must be a positive integer up to "
       "{}, the words the search may emit, got {}", (words,))
  rules = (beam_rule,
           (max_length, 1, 500, "max length must be in 1..500, got {}", ()),
           (top_k, 1, beam_size, "top_k must be in 1..{}, got {}",
            (beam_size,)))
  asserts = []
  for value, low, high, message, shown in rules:
    if tf.is_tensor(value) or tf.is_tensor(high):
      asserts.append(tf.debugging.Assert(
          tf.logical_and(value >= low, value <= high),
          [tf.strings.format(message, (*shown, value))]))
    elif not isinstance(value, int) or not low <= value <= high:
      raise ValueError(message.format(*shown, value))
  return asserts


def _checked(beam_size, max_length, top_k=None, words=None):
  """The sizes after ``_check``: tensors wait for its assertions."""
  asserts = _check(beam_size, max_length, top_k, words)
  if not asserts:
    return beam_size, max_length, top_k
  with tf.control_dependencies(asserts):
    return tuple(None if x is None else tf.identity(x)
                 for x in (beam_size, max_length, top_k))


def beam_search(decoder, features, beam_size=3, max_length=20,
                length_penalty=0.0, top_k=None, start_id=1, end_id=2,
                pad_id=0, banned_ids=()):
  """Batched beam search over a batch of images.

  Beams that emit <end> are kept, frozen, and compete on their total
  log-probability; the search stops when all beams of all images have ended
  or at ``max_length``, in which case unfinished beams (the best partial
  captions) are returned as they are. Final ranking divides by
  length**length_penalty (0 = plain log-probability). With
  length_penalty 0 it stops as soon as each image's ``top_k`` best beams
  have ended: the beams are kept sorted and a live beam's log-probability
  only falls, so no live beam can overtake them and the result is the one
  the full search would return, in fewer decoder steps.

  Args:
    decoder: an object with the decoder-step contract.
    features: float32 [B, D] or [B, L, D] image features.
    beam_size: int or int32 scalar tensor. K beams per image.
    max_length: int or int32 scalar tensor. Most words per caption, <end>
      included.
    length_penalty: float. The exponent alpha above.
    top_k: int or int32 scalar tensor <= beam_size. Captions returned per
      image (default: all K).
    banned_ids: sequence of int. Words never emitted.
  """
  k, max_length, top_k = _checked(beam_size, max_length, top_k,
                                  emitted_words(decoder, banned_ids))
  top_k = k if top_k is None else top_k
  batch_size = tf.shape(features)[0]
  state = _tile(decoder.initial_state(features), k)
  num_locations = tf.shape(features)[1] if decoder.has_attention else 1

  # Only beam 0 is alive at the start, so the first step draws K distinct
  # words from it rather than K copies of the same one. Likewise a finished
  # beam may only continue with <pad> (its first candidate), at no cost.
  first_only = tf.where(tf.range(k) == 0, 0.0, NEG_INF)  # [K]
  log_probs = tf.tile(first_only[None], [batch_size, 1])
  beam_offsets = tf.range(batch_size)[:, None] * k  # [B, 1]
  init = dict(
      t=tf.constant(0),
      words=tf.fill([batch_size * k], start_id),
      state=state,
      log_probs=log_probs,
      finished=tf.zeros([batch_size, k], tf.bool),
      lengths=tf.zeros([batch_size, k], tf.int32),
      ids=tf.fill([batch_size, k, max_length], pad_id),
      attention=tf.zeros([batch_size, k, max_length, num_locations]))

  def body(v):
    t = v["t"]
    out = decoder.step(v["words"], v["state"])
    logits = _ban(out.logits, banned_ids)
    # The K best extensions of all beams are among the K best of each beam:
    # take those first (top-k over V per beam, then over K*K per image)
    # instead of sorting K*V candidates, and normalise only those K.
    best_logits, best_words = tf.math.top_k(logits, k)  # [B*K, K]
    step_log_probs = best_logits - tf.reduce_logsumexp(logits, -1,
                                                       keepdims=True)
    step_log_probs = tf.reshape(step_log_probs, [batch_size, k, k])
    best_words = tf.reshape(best_words, [batch_size, k, k])
    finished = v["finished"][..., None]
    step_log_probs = tf.where(finished, first_only, step_log_probs)
    best_words = tf.where(finished, pad_id, best_words)
    candidates = tf.reshape(v["log_probs"][..., None] + step_log_probs,
                            [batch_size, k * k])
    new_log_probs, flat = tf.math.top_k(candidates, k)  # [B, K]
    parent = flat // k
    word = tf.gather(tf.reshape(best_words, [batch_size, k * k]), flat,
                     batch_dims=1)
    rows = tf.reshape(beam_offsets + parent, [-1])

    was_finished = tf.gather(v["finished"], parent, batch_dims=1)
    column = tf.one_hot(t, max_length, dtype=tf.int32)  # [T]
    ids = tf.gather(v["ids"], parent, batch_dims=1)
    ids = ids * (1 - column) + word[..., None] * column
    attention = tf.gather(v["attention"], parent, batch_dims=1)
    if out.attention is not None:
      step_attention = tf.gather(out.attention, rows)
      step_attention = tf.reshape(step_attention, [batch_size, k, 1, -1])
      attention += step_attention * tf.cast(column, tf.float32)[:, None] * \
          tf.cast(tf.logical_not(was_finished), tf.float32)[..., None, None]
    return (dict(
        t=t + 1,
        words=tf.reshape(word, [-1]),
        state=_gather_rows(out.state, rows),
        log_probs=new_log_probs,
        finished=tf.logical_or(was_finished, tf.equal(word, end_id)),
        lengths=tf.gather(v["lengths"], parent, batch_dims=1) +
        tf.cast(tf.logical_not(was_finished), tf.int32),
        ids=ids,
        attention=attention),)

  exact_early_stop = isinstance(length_penalty, (int, float)) and \
      length_penalty == 0
  v = tf.while_loop(_not_done(max_length, top_k if exact_early_stop else k),
                    body, (init,), shape_invariants=(_invariants(init),),
                    maximum_iterations=max_length)[0]
  lengths = tf.maximum(v["lengths"], 1)
  scores = v["log_probs"] / tf.pow(tf.cast(lengths, tf.float32),
                                   length_penalty)
  scores, order = tf.math.top_k(scores, top_k)
  pick = lambda x: tf.gather(x, order, batch_dims=1)  # noqa: E731
  return SearchResult(pick(v["ids"]), pick(v["log_probs"]), scores,
                      pick(lengths),
                      pick(v["attention"]) if decoder.has_attention else None)


def _invariants(structure):
  """Shape invariants with the batch dimension left free."""
  def free(x):
    shape = x.shape.as_list()
    return tf.TensorShape([None] + shape[1:]) if shape else x.shape
  return tf.nest.map_structure(free, structure)


def greedy(decoder, features, max_length=20, start_id=1, end_id=2, pad_id=0,
           banned_ids=()):
  """Most likely word at each step; k = 1 caption per image."""
  return _decode(decoder, features, max_length, lambda logits, t: tf.cast(
      tf.argmax(logits, -1), tf.int32), start_id, end_id, pad_id, banned_ids)


def sample(decoder, features, max_length=20, temperature=1.0, top_k=0,
           seed=(0, 0), start_id=1, end_id=2, pad_id=0, banned_ids=()):
  """Samples each word from softmax(logits / temperature).

  Args:
    top_k: int. When > 0, sample only among the k most likely words.
    seed: pair of ints, or an int32 [2] tensor; the same seed gives the same
      captions.
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  seed = tf.cast(seed, tf.int32)

  def choose(logits, t):
    logits = logits / temperature
    if top_k:
      kth = tf.math.top_k(logits, top_k).values[:, -1:]
      logits = tf.where(logits < kth, NEG_INF, logits)
    return tf.cast(tf.random.stateless_categorical(
        logits, 1, seed + tf.stack([t, 0]))[:, 0], tf.int32)
  return _decode(decoder, features, max_length, choose, start_id, end_id,
                 pad_id, banned_ids)


def _decode(decoder, features, max_length, choose, start_id, end_id, pad_id,
            banned_ids):
  """One-path decoding: ``choose(logits [B, V], t) -> int32 [B]`` per step."""
  _, max_length, _ = _checked(1, max_length)
  batch_size = tf.shape(features)[0]
  num_locations = tf.shape(features)[1] if decoder.has_attention else 1
  init = dict(
      t=tf.constant(0),
      words=tf.fill([batch_size], start_id),
      state=decoder.initial_state(features),
      log_probs=tf.zeros([batch_size]),
      finished=tf.zeros([batch_size], tf.bool),
      lengths=tf.zeros([batch_size], tf.int32),
      ids=tf.fill([batch_size, max_length], pad_id),
      attention=tf.zeros([batch_size, max_length, num_locations]))

  def body(v):
    out = decoder.step(v["words"], v["state"])
    logits = _ban(out.logits, banned_ids)
    alive = tf.logical_not(v["finished"])
    word = tf.where(alive, choose(logits, v["t"]), pad_id)
    word_log_prob = tf.gather(logits, word, batch_dims=1) - \
        tf.reduce_logsumexp(logits, -1)
    column = tf.one_hot(v["t"], max_length, dtype=tf.int32)  # [T]
    attention = v["attention"]
    if out.attention is not None:
      attention += out.attention[:, None, :] * tf.cast(
          column, tf.float32)[:, None] * tf.cast(alive, tf.float32)[
              :, None, None]
    return (dict(
        t=v["t"] + 1, words=word, state=out.state,
        log_probs=v["log_probs"] + tf.where(alive, word_log_prob, 0.0),
        finished=tf.logical_or(v["finished"], tf.equal(word, end_id)),
        lengths=v["lengths"] + tf.cast(alive, tf.int32),
        ids=v["ids"] * (1 - column) + word[:, None] * column,
        attention=attention),)

  v = tf.while_loop(_not_done(max_length), body, (init,),
                    shape_invariants=(_invariants(init),),
                    maximum_iterations=max_length)[0]
  lengths = tf.maximum(v["lengths"], 1)
  attention = v["attention"][:, None] if decoder.has_attention else None
  return SearchResult(v["ids"][:, None], v["log_probs"][:, None],
                      v["log_probs"][:, None], lengths[:, None], attention)


def _not_done(max_length, first=None):
  """Loop condition: steps left and some caption still going; with
  ``first``, some caption among the first ``first`` of each image (the
  best beams, as beam search keeps them sorted)."""
  def cond(v):
    finished = v["finished"] if first is None else v["finished"][:, :first]
    return tf.logical_and(v["t"] < max_length,
                          tf.logical_not(tf.reduce_all(finished)))
  return cond
