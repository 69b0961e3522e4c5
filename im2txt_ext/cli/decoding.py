"""The decoding-option flags shared by im2txt-caption and im2txt-evaluate,
passed to ``Captioner.search`` (rules: see ``im2txt_ext.search``; defaults:
``im2txt_ext.decoding``)."""

from absl import flags

from im2txt_ext import decoding

FLAGS = flags.FLAGS
DEFAULTS = decoding.DEFAULTS


def define_flags():
  """The decoding flags, for the define_flags of a command that takes them."""
  flags.DEFINE_float(
      "length_penalty", DEFAULTS["length_penalty"], "Beam search: rank "
      "captions by log p / lp(length) with this exponent alpha (0 = plain "
      "log-probability).", lower_bound=0.0)
  flags.DEFINE_enum(
      "length_normalization", DEFAULTS["length_normalization"],
      ["plain", "gnmt"], "Beam search: lp(n) = n^alpha (plain) or ((5 + n) "
      "/ 6)^alpha (gnmt, Wu et al. 2016).")
  flags.DEFINE_integer(
      "min_length", DEFAULTS["min_length"], "No <end> before this many "
      "words.", lower_bound=0)
  flags.DEFINE_boolean(
      "no_bad_endings", DEFAULTS["no_bad_endings"], "No <end> right after a "
      "determiner, conjunction or preposition (a, the, and, with, of, ...).")
  flags.DEFINE_integer(
      "no_repeat_ngram_size", DEFAULTS["no_repeat_ngram_size"], "Never "
      "repeat an n-gram of this size within a caption (0 = off; 3 blocks "
      "trigrams).", lower_bound=0)
  flags.DEFINE_float(
      "repetition_penalty", DEFAULTS["repetition_penalty"], "Divide a "
      "positive logit (or multiply a negative one) of a word already in the "
      "caption by this (CTRL; 1 = off).", lower_bound=1e-6)
  flags.DEFINE_integer(
      "diversity_groups", DEFAULTS["diversity_groups"], "Beam search: "
      "diverse beam search with this many groups (must divide --beam_size; "
      "1 = plain beam search).", lower_bound=1)
  flags.DEFINE_float(
      "diversity_strength", DEFAULTS["diversity_strength"], "Diverse beam "
      "search: the Hamming diversity penalty lambda.", lower_bound=0.0)
  flags.DEFINE_float(
      "top_p", DEFAULTS["top_p"], "Sampling: nucleus sampling, among the "
      "fewest likeliest words whose probabilities sum to p (1 = all).",
      lower_bound=1e-6, upper_bound=1.0)


def search_options(method):
  """The flags' options that ``method`` takes, as keyword arguments of
  ``Captioner.search``."""
  return {name: FLAGS[name].value for name in decoding.options_of(method)}
