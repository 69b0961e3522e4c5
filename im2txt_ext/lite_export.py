"""TFLite (LiteRT) export in the split layout of ``im2txt_ext.lite``: an
encoder model (image -> the decoder's initial state), one decoder step, the
vocabulary and a manifest.

    im2txt-export --run_dir=runs/demo --output=exports/demo_lite \
        --format=tflite --tflite_weights=int8

Built on the decoder-step contract alone (``initial_state``, ``step``,
``static_state``, ``max_steps``): the state's entries become the models'
inputs and outputs, named ``state_`` and their path in the state
(``state_cell_0``, ``state_cache_2_1``). A decoder whose step cannot be a
fixed-size model (a state entry that changes shape, another structure, an
op outside TFLite's builtins) is refused with the reason in one line.

Weights (``WEIGHTS``): float32; float16 (weights stored in 16 bits,
computed in float32); int8 (dynamic-range quantisation: weight matrices of
1024 values or more in 8 bits, activations in float; the smallest, but its
CNN runs slower on a CPU than in float: BENCHMARKS.md). The step runs the
word embedding and the RNN's input projection, not the SavedModel's
precomputed [V, 4H] table (``word_inputs.PrecomputedWordInputs``),
which would make the file larger by that table.
"""

import json
import os
import re
import shutil

import tensorflow as tf

from im2txt_ext import decoding, export, lite, runs, search
from im2txt_ext.data import vocabulary
from im2txt_ext.errors import InputError


def state_names(state, prefix="state"):
  """The names of a state's tensors in ``tf.nest.flatten`` order: the
  prefix and the path of dict keys and list indices, joined by "_"."""
  if isinstance(state, dict):
    return [name for key in sorted(state)
            for name in state_names(state[key], f"{prefix}_{key}")]
  if isinstance(state, (list, tuple)):
    return [name for i, value in enumerate(state)
            for name in state_names(value, f"{prefix}_{i}")]
  return [prefix]


def _static_flags(state, static_keys):
  """Per flattened tensor of ``state``: whether its top-level entry is one
  of ``static_keys``."""
  return [static for key in sorted(state) for static in
          [key in static_keys] * len(tf.nest.flatten(state[key]))]


def _converted(function, module, weights, name, part):
  """The .tflite bytes of a concrete function; InputError (one line) where
  the converter cannot express it with TFLite's builtin ops."""
  converter = tf.lite.TFLiteConverter.from_concrete_functions([function],
                                                              module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if weights != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if weights == "float16":
    converter.target_spec.supported_types = [tf.float16]
  try:
    return converter.convert()
  except Exception as e:  # The converter raises several error types.
    ops = sorted(set(re.findall(r"'(tf\.\w+)' op is neither a custom op "
                                r"nor a flex op", str(e))))
    reason = f"ops outside TFLite's builtins: {', '.join(ops)}" if ops else \
        (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise InputError(f"decoder {name!r} cannot be exported to TFLite: its "
                     f"{part} does not convert ({reason})") from None


def convert(decoder, image_size, weights="float32", name=None):
  """(encoder .tflite bytes, step .tflite bytes) of a decoder with its
  encoder; ``name`` names it in errors (default: its class)."""
  name = name or type(decoder).__name__
  if weights not in lite.WEIGHTS:
    raise InputError(f"TFLite weights must be one of "
                     f"{', '.join(lite.WEIGHTS)}, got {weights!r}")
  example = decoder.initial_state(decoder.encode(
      {"image": tf.zeros([1, image_size, image_size, 3])}))
  names = state_names(example)
  static = _static_flags(example, getattr(decoder, "static_state", ()))
  flat = tf.nest.flatten(example)
  module = tf.Module()
  # Keras's tf.Variables, tracked here, so that the converter freezes them.
  module.weights = [v.value for v in decoder.variables]

  # Without AutoGraph (the contract is graph ops), so that a refusal
  # raised while tracing stays the one-line InputError.
  @tf.function(input_signature=[tf.TensorSpec(
      [None, image_size, image_size, 3], tf.float32, name="image")],
               autograph=False)
  def encoder(image):
    state = decoder.initial_state(decoder.encode({"image": image}))
    return dict(zip(names, tf.nest.flatten(state)))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int32,
                                              name="word_ids")] + [
      tf.TensorSpec([None] + x.shape[1:], x.dtype, name=n)
      for n, x in zip(names, flat)], autograph=False)
  def step(word_ids, *state):
    out = decoder.step(word_ids, tf.nest.pack_sequence_as(example,
                                                          list(state)))
    try:
      tf.nest.assert_same_structure(example, out.state, check_types=False)
    except (ValueError, TypeError):
      raise InputError(f"decoder {name!r} cannot be exported to TFLite: its "
                       "step returns a state of another structure than "
                       "initial_state's") from None
    outputs = {"logits": out.logits}
    if out.attention is not None:
      outputs["attention"] = out.attention
    for n, before, after, fixed in zip(names, flat, tf.nest.flatten(
        out.state), static):
      if after.shape[1:] != before.shape[1:] or after.dtype != before.dtype:
        raise InputError(
            f"decoder {name!r} cannot be exported to TFLite: its state "
            f"entry {n[len(lite.STATE_PREFIX):]} goes from "
            f"{before.dtype.name} {before.shape[1:]} to {after.dtype.name} "
            f"{after.shape[1:]} at a step (a step model needs a fixed-size "
            "state)")
      if not fixed:
        outputs[n] = after
    return outputs

  # The step first: a decoder that cannot be exported fails sooner.
  step = _converted(step.get_concrete_function(), module, weights, name,
                    "step")
  return _converted(encoder.get_concrete_function(), module, weights, name,
                    "encoder"), step


def export_tflite(run_dir, output_dir, which="best", weights="float32",
                  beam_size=3, max_length=20, top_k=1, allow_unk=False,
                  length_normalization=decoding.DEFAULTS[
                      "length_normalization"]):
  """Writes a run's model as a TFLite export (``im2txt_ext.lite``'s
  layout) to ``output_dir``, replacing an earlier one atomically; the
  search defaults are those of ``export.export``. Returns {file name:
  bytes}."""
  model = runs.TrainedModel(run_dir, which)
  vocab = model.vocab
  tokens = vocab.special_tokens(ban_unknown=not allow_unk)
  export.check_sizes(model.decoder, tokens, beam_size, max_length, top_k)
  encoder, step = convert(model.decoder, runs.image_size(model.config),
                          weights, model.config.model.decoder)
  manifest = {
      "format": lite.FORMAT, "decoder": model.config.model.decoder,
      "weights": weights, "image_size": runs.image_size(model.config),
      "start_id": tokens.start, "end_id": tokens.end, "pad_id": tokens.pad,
      "banned_ids": list(tokens.banned),
      "bad_ending_ids": vocab.ids_of(vocabulary.BAD_ENDINGS),
      "max_steps": search.longest_caption(model.decoder),
      "search": {"beam_size": beam_size, "max_length": max_length,
                 "top_k": top_k, **decoding.defaults_of("beam"),
                 "length_normalization": length_normalization}}

  def write(folder):
    for file_name, data in ((lite.ENCODER_FILE, encoder),
                            (lite.STEP_FILE, step)):
      with open(os.path.join(folder, file_name), "wb") as f:
        f.write(data)
    shutil.copyfile(os.path.join(run_dir, runs.VOCAB_FILE),
                    os.path.join(folder, lite.VOCAB_FILE))
    with open(os.path.join(folder, lite.MANIFEST_FILE), "w",
              encoding="utf-8") as f:
      json.dump(manifest, f, indent=2)
  export.write_atomically(output_dir, write, lite.MANIFEST_FILE,
                          "a TFLite export")
  return {file_name: os.path.getsize(os.path.join(output_dir, file_name))
          for file_name in sorted(os.listdir(output_dir))}
