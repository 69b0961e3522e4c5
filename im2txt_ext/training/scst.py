"""Self-critical sequence training (Rennie et al. 2017) for every decoder.

Shape letters: B batch, K samples per image, T caption length, V vocabulary.

Fine-tunes a cross-entropy-trained captioner on the CIDEr-D of its own
captions. Each step samples K captions per image from softmax(logits / tau)
(``search.sample``: one tf.while_loop, in graph), scores them against the
image's training references with the fast ``CiderD``, and minimises the
REINFORCE surrogate

  L = -sum_s (r(w^s) - b_s) sum_t log p(w^s_t) / N

whose gradient is Rennie et al.'s estimate -(r(w^s) - b) grad log p(w^s)
(REINFORCE with a baseline), summed over the samples. The baseline b is the
reward of the greedy caption, r(w_hat), the "self-critical" one; or the
mean reward of the image's K - 1 other samples (Luo 2020, "A better variant
of self-critical sequence training"). t runs over the sampled words up to
and including <end>, and N counts them over all replicas, as the
cross-entropy divides by the words of its captions, so that
``train.scst_xent_weight`` mixes the two per word.

log p(w^s) comes from a teacher-forced pass over the samples (each decoder's
fast path) in inference mode, as search samples: the same policy, no
dropout (hard attention feeds its inference context, by default the
expectation). The samples and the greedy
caption never hold <unk>, as no caption the library emits does. Sampling,
the rewards and the greedy baseline are the term's ``prepare``, which the
trainer runs outside its gradient tape. The reward
runs on the host through ``tf.numpy_function`` (a few milliseconds a step),
so it works per replica under the CPU/GPU tf.distribute strategies, not on
TPUs.
"""

import numpy as np
import tensorflow as tf

from im2txt_ext import search
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.errors import InputError
from im2txt_ext.training import objectives
from im2txt_ext.training.cider_d import CiderD

BASELINES = ("greedy", "mean")


def policy_gradient_loss(logits, words, lengths, advantage, num_words=None,
                         banned_ids=()):
  """The REINFORCE surrogate of sampled captions, and the policy's entropy.

  Args:
    logits: float32 [N, T, V]. The policy's logits before each sampled word.
    words: int32 [N, T]. The sampled words.
    lengths: int32 [N]. Words per caption, <end> included; later positions
      (after <end>) are masked out.
    advantage: float32 [N]. r(w^s) - b, held constant.
    num_words: optional float32 scalar, the divisor of the sums (under
      distribution: the sampled words of all replicas); default: the words
      of these captions.
    banned_ids: sequence of int. Words the sampler never draws: the policy
      is the softmax over the others, as the distribution drawn from.

  Returns:
    (loss, entropy): -sum_n A_n sum_t log p(w_nt) / num_words, and the
    entropy (nats) of the policy at the sampled positions, summed and
    divided likewise.
  """
  mask = tf.sequence_mask(lengths, tf.shape(words)[1], tf.float32)  # [N, T]
  if banned_ids:
    banned = tf.reduce_any(tf.range(tf.shape(logits)[-1])[:, None] ==
                           tf.constant(list(banned_ids))[None], axis=1)
    logits = tf.where(banned, search.NEG_INF, logits)
  log_probs = tf.nn.log_softmax(logits)  # [N, T, V]
  word_log_probs = tf.gather(log_probs, words, batch_dims=2)  # [N, T]
  if num_words is None:
    num_words = tf.reduce_sum(mask)
  count = tf.maximum(num_words, 1.0)
  advantage = tf.stop_gradient(advantage)[:, None]
  loss = -tf.reduce_sum(advantage * word_log_probs * mask) / count
  entropy = -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)  # [N, T]
  return loss, tf.reduce_sum(entropy * mask) / count


class SelfCritical(objectives.LossTerm):
  """The SCST loss term (see the module docstring): ``prepare`` samples and
  rewards, the call computes the policy gradient's surrogate.

  Args:
    decoder: CaptionDecoder.
    vocab: Vocabulary of the decoder.
    references: dict image id -> list of reference captions (str): the
      training references, the reward's corpus.
    samples: int. K, captions sampled per image. Defaults to 5.
    baseline: str. "greedy" (Rennie et al.) or "mean" (of the other
      samples; needs K >= 2). Defaults to "greedy".
    temperature: float. tau of the sampling softmax. Defaults to 1.0.
    max_length: int. Most words per sampled caption, <end> included.
      Defaults to 20.
  """

  def __init__(self, decoder, vocab, references, samples=5,
               baseline="greedy", temperature=1.0, max_length=20):
    if baseline not in BASELINES:
      raise InputError(f"unknown scst_baseline {baseline!r}: use greedy or "
                       "mean")
    if samples < (2 if baseline == "mean" else 1):
      raise InputError(f"scst_samples must be >= 1 (>= 2 with the mean "
                       f"baseline), got {samples}")
    if temperature <= 0:
      raise InputError(f"scst_temperature must be > 0, got {temperature}")
    self.decoder = decoder
    self.vocab = vocab
    self.samples = samples
    self.baseline = baseline
    self.temperature = temperature
    self.max_length = max_length
    self.scorer = CiderD({image_id: [tokenize(c) for c in captions]
                          for image_id, captions in references.items()})
    self._word_ids = self.scorer.word_table(vocab.words)  # Vocab -> scorer.
    self.tokens = vocab.special_tokens()

  def rewards(self, image_ids, word_ids):
    """CIDEr-D of captions given as vocabulary ids (NumPy, on the host).

    Args:
      image_ids: bytes [N]. The image of each caption.
      word_ids: int32 [N, T]. Words as search returns them; a caption reads
        as ``Vocabulary.decode`` reads it (up to <end>, no <start>/<pad>).
    Returns:
      float32 [N].
    """
    ended = np.cumsum(word_ids == self.vocab.end_id, axis=1) > 0
    keep = ~ended & (word_ids != self.vocab.pad_id) & \
        (word_ids != self.vocab.start_id)
    images = self.scorer.images([i.decode() for i in image_ids])
    return self.scorer.score_ids(images, self._word_ids[word_ids],
                                 keep).astype(np.float32)

  def _reward(self, image_ids, word_ids):
    reward = tf.numpy_function(self.rewards, [image_ids, word_ids],
                               tf.float32, stateful=False)
    return tf.reshape(reward, tf.shape(image_ids))

  def prepare(self, inputs):
    """The step's samples and their rewards, which carry no gradient (the
    trainer runs this outside its tape): {"words" int32 [B*K, T],
    "lengths" int32 [B*K], "reward" and "baseline" float32 [B*K]}."""
    k = self.samples
    tiled = tf.repeat(inputs.features, k, axis=0)  # [B*K, ...], image-major
    sampled = search.sample(self.decoder, tiled, self.max_length,
                            self.temperature, seed=inputs.seed,
                            tokens=self.tokens)
    words, lengths = sampled.ids[:, 0], sampled.lengths[:, 0]  # [B*K, T]
    image_ids = inputs.batch["image_id"]
    reward = self._reward(tf.repeat(image_ids, k), words)
    if self.baseline == "greedy":
      greedy = search.greedy(self.decoder, inputs.features, self.max_length,
                             tokens=self.tokens)
      baseline = tf.repeat(self._reward(image_ids, greedy.ids[:, 0]), k)
    else:
      per_image = tf.reshape(reward, [-1, k])  # [B, K]
      others = tf.reduce_sum(per_image, axis=1, keepdims=True) - per_image
      baseline = tf.reshape(others / (k - 1), [-1])
    return {"words": words[:, :tf.reduce_max(lengths)], "lengths": lengths,
            "reward": reward, "baseline": baseline}

  def __call__(self, inputs, prepared=None):
    """The policy-gradient loss on ``prepare``'s samples, and its logs:
    this replica's shares (they add up to the global values, as the
    cross-entropy's) of "policy_loss", "reward" (mean over samples),
    "baseline", "word_entropy" and "sample_length" (words, <end>
    included)."""
    words, lengths = prepared["words"], prepared["lengths"]
    reward, baseline = prepared["reward"], prepared["baseline"]
    tiled = tf.repeat(inputs.features, self.samples, axis=0)
    start = tf.fill([tf.shape(words)[0], 1], self.vocab.start_id)
    logits, _ = self.decoder.teacher_forced(
        tiled, tf.concat([start, words[:, :-1]], axis=1), training=False)
    # Sums over all replicas: each replica returns its share of the means.
    words_each = tf.cast(lengths, tf.float32)  # [B*K]
    num_words, num_samples = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM,
        [tf.reduce_sum(words_each), tf.cast(tf.size(words_each), tf.float32)])
    policy, entropy = policy_gradient_loss(
        logits / self.temperature, words, lengths, reward - baseline,
        num_words, search.banned_words(self.tokens))
    return policy, {
        "policy_loss": policy,
        "reward": tf.reduce_sum(reward) / num_samples,
        "baseline": tf.reduce_sum(baseline) / num_samples,
        "word_entropy": entropy,
        "sample_length": tf.reduce_sum(words_each) / num_samples}


def from_config(config, decoder, vocab, records):
  """The SelfCritical loss of ``config.train``, rewarded on ``records``."""
  t = config.train
  if t.jit_compile or t.strategy == "tpu":
    raise InputError("train.scst computes its reward on the host, which XLA "
                     "and TPUs cannot call: set train.jit_compile=false and "
                     "another train.strategy")
  references = {}
  for record in records:
    references.setdefault(record.image_id, []).extend(record.captions)
  return SelfCritical(decoder, vocab, references, samples=t.scst_samples,
                      baseline=t.scst_baseline,
                      temperature=t.scst_temperature,
                      max_length=config.data.max_caption_length + 1)
