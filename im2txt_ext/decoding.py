"""The captioners' decoding options: their names, by search method, and
their defaults (no TensorFlow here: the command-line flags read them).

The defaults are those of ``Captioner``, ``im2txt-caption``,
``im2txt-evaluate``, the export's fixed-size signatures and the page's API;
``search.beam_search`` itself defaults to the plain search. They were
chosen on the Flickr8k dev split with the soft-attention model, by
CIDEr-D (``experiments/decoding.py``; the tables are in docs/decoding.md):
length normalisation n^1.0 and trigram blocking, 0.512 against 0.351 for
the plain beam search. Without a length normalisation the beam search,
which no longer loses a finished caption, prefers captions of two words
("a man"), likelier under the model than any long one.
"""

from im2txt_ext.errors import InputError

# The sizes each search method takes besides its decoding options.
SIZES = {"beam": ("beam_size", "max_length", "top_k"),
         "greedy": ("max_length",),
         "sample": ("max_length", "temperature", "top_k")}
# For every method, for beam search only, for sampling only.
RULES = ("min_length", "no_bad_endings", "no_repeat_ngram_size",
         "repetition_penalty")
BEAM_OPTIONS = ("length_penalty", "length_normalization",
                "diversity_groups", "diversity_strength")
SAMPLE_OPTIONS = ("top_p",)
# The beam search's options as inputs of the export's caption_with_options
# (and of the page's API); the length normalisation is fixed at export.
SIGNATURE_OPTIONS = tuple(name for name in RULES + BEAM_OPTIONS
                          if name != "length_normalization")
# The search sizes of caption_with_options, the first inputs it takes;
# serving_default keeps the export's in its search_defaults variable.
SIGNATURE_SIZES = ("beam_size", "max_length", "k")

DEFAULTS = dict(length_penalty=1.0, length_normalization="plain",
                min_length=0, no_bad_endings=False, no_repeat_ngram_size=3,
                repetition_penalty=1.0, diversity_groups=1,
                diversity_strength=0.0, top_p=1.0)


def options_of(method):
  """The names of the options (beside the sizes) of a search method."""
  return RULES + (BEAM_OPTIONS if method == "beam" else
                  SAMPLE_OPTIONS if method == "sample" else ())


def defaults_of(method):
  """{name: default} of the options of a search method."""
  return {name: DEFAULTS[name] for name in options_of(method)}


def check_options(method, options, sizes=()):
  """One-line InputError unless ``method`` is a search method and every
  name in ``options`` is one of its decoding options or of ``sizes``."""
  if method not in SIZES:
    raise InputError(f"unknown search method {method!r}: use beam, "
                     "greedy or sample")
  check_names(options, tuple(sizes) + options_of(method),
              f"the {method} search")


def check_names(options, allowed, searcher):
  """One-line InputError naming every name in ``options`` not in
  ``allowed``, the options that ``searcher`` (e.g. "an export") takes."""
  wrong = sorted(set(options) - set(allowed))
  if wrong:
    raise InputError(f"{', '.join(wrong)}: not an option of {searcher} "
                     f"(it takes {', '.join(allowed)})")


def check_search_args(args):
  """``check_options`` of a search's keyword arguments {name: value}: its
  method (default beam), sizes and decoding options."""
  method = args.get("method", "beam")
  check_options(method, args, ("method",) + SIZES.get(method, ()))
