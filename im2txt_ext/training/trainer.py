"""The one training loop, for every decoder.

Minimises an objective made of loss strategies (``objectives``: masked
cross-entropy with optional label smoothing and scheduled sampling, each
variant's own terms, SCST) and owns the rest: the gradient tape, the
distribution, loss scaling, global-norm clipping and the update
(``optimizers``: Adam or SGD with a schedule, a smaller rate for a
fine-tuned CNN), TensorBoard scalars, a progress bar, and periodic
validation (greedy captions, BLEU-4 and CIDEr-D) that prints sample
captions.
``train.scst`` adds self-critical training on CIDEr-D (``scst``) to the same
step (or replaces the cross-entropy, with ``train.scst_xent_weight`` 0);
``train.init_from`` starts a run from another run's weights.

Checkpoints hold the model, the optimiser, the step and the position of the
input iterator, so a run killed at any moment resumes from its last
checkpoint with the same optimiser state and data order, losing at most the
steps since that checkpoint; one stopped by SIGTERM or Ctrl-C saves its
step first (``stopping``), and loses none. The checkpoint with the best
validation score (``train.best_by``: BLEU-4, or CIDEr-D for SCST, the
reward it optimises, by default) is kept apart in ``best/``.

The same loop runs under any tf.distribute strategy (``train.strategy``; see
``distribute``): the global batch is split over the replicas, the
loss terms are normalised by the words of the global batch, the terms'
step statistics are summed over the replicas before their update hook,
and only the chief writes the run directory. ``train.precision`` and
``train.jit_compile`` turn on mixed precision and XLA.
"""

import math
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from im2txt_ext import devices, inference, runs, search
from im2txt_ext.config import apply_overrides
from im2txt_ext.data import pipeline, readers
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.errors import InputError
from im2txt_ext.metrics import bleu4
from im2txt_ext.training import (distribute, objectives, optimizers, scst,
                                  stopping)
from im2txt_ext.training.cider_d import CiderD


# Validation scores, as messages name them.
_SCORE_NAMES = {"val_bleu4": "BLEU-4", "val_cider_d": "CIDEr-D"}


def load_split_records(config, which):
  """Training ("train") or validation ("val") records named by the config.

  Validation records come from ``data.val_captions``, else from the training
  caption file. Where a file marks splits, only the records of
  ``data.train_split`` or ``data.val_split`` are used.
  """
  data = config.data
  path = data.val_captions if which == "val" and data.val_captions else \
      data.train_captions
  if not path:
    raise InputError("no training caption file: set data.train_captions")
  report = readers.SkipReport()
  records = readers.read_dataset(
      path, images_dir=data.images_dir or None,
      on_error="skip" if data.skip_bad_inputs else "raise", report=report)
  if report.total:
    print(f"{path}: {report.summary()}")
  wanted = data.train_split if which == "train" else data.val_split
  if wanted and any(r.split for r in records):
    records = readers.split_records(records, wanted)
  if not records:
    raise InputError(f"no {which} records (split {wanted!r})", path)
  return records


def encoder_batch_statistics(config):
  """Whether the CNN, while it is fine-tuned, normalises with batch
  statistics and updates its moving ones (``train.encoder_batch_norm``
  "batch"), rather than keeping those it has, in inference mode ("frozen").
  "auto": frozen for pretrained weights, batch statistics for a CNN that
  starts from random ones (``model.encoder_weights`` "")."""
  mode = config.train.encoder_batch_norm
  if mode == "auto":
    return not config.model.encoder_weights
  if mode not in ("frozen", "batch"):
    raise InputError(f"unknown train.encoder_batch_norm {mode!r}: use auto, "
                     "frozen or batch")
  return mode == "batch"


def best_checkpoint_score(config):
  """The key in ``Trainer.validate``'s scores of the one that picks the best
  checkpoint (``train.best_by``); "auto": CIDEr-D for SCST, the reward it
  optimises, else BLEU-4."""
  by = config.train.best_by
  if by == "auto":
    by = "CIDEr-D" if config.train.scst else "BLEU-4"
  keys = {name: key for key, name in _SCORE_NAMES.items()}
  if by not in keys:
    raise InputError(f"unknown train.best_by {by!r}: use auto, BLEU-4 or "
                     "CIDEr-D")
  return keys[by]


def objective_of(config, decoder, vocab, records):
  """The training objective of ``config.train`` for ``decoder``.

  The cross-entropy and the decoder's own terms (``decoder.loss_terms()``,
  e.g. the attention regularisers); with ``train.scst``, SCST's policy
  gradient rewarded on ``records``, plus those weighted by
  ``train.scst_xent_weight`` (and left out where it is 0).
  """
  reference = [objectives.CrossEntropy()] + list(decoder.loss_terms())
  t = config.train
  for term in reference:
    if t.scheduled_sampling and term.teacher_forcing_only:
      raise InputError(f"model {config.model.decoder!r} trains with teacher "
                       f"forcing only ({term.teacher_forcing_only}): set "
                       "train.scheduled_sampling=0")
  if not t.scst:
    return objectives.Objective((1.0, term) for term in reference)
  weighted = [(1.0, scst.from_config(config, decoder, vocab, records))]
  if t.scst_xent_weight:
    weighted += [(t.scst_xent_weight, term) for term in reference]
  return objectives.Objective(weighted)


def seed_generator_states(model):
  """The states of ``model``'s Keras SeedGenerators (its dropout layers',
  hard attention's location sampler), which tf.train.Checkpoint does not
  reach through a Keras model: checkpointed beside it, a resumed run draws
  the masks and samples an unbroken one would."""
  return [v for v in model.variables if _is_seed_generator_state(v)]


def learned_variables(model):
  """``model``'s variables less its seed generators' states: its weights
  and BatchNorm statistics, what two runs that trained alike share."""
  return [v for v in model.variables if not _is_seed_generator_state(v)]


def _is_seed_generator_state(variable):
  return variable.name == "seed_generator_state"


class Trainer:
  """Trains the decoder of an ExperimentConfig in a run directory.

  A run directory is one run: once it holds a checkpoint, training resumes
  with the config and vocabulary saved there. Until then (a first start
  that failed, e.g. on a misspelt caption file) they are written anew.

  Args:
    config: ExperimentConfig. Ignored (the saved one is used) when the run
      has started, so a resumed run is the same run.
    run_dir: str. Where config, vocabulary, checkpoints and logs go.
    strategy: optional tf.distribute.Strategy, or a name of
      ``distribute.STRATEGIES`` (default: ``config.train.strategy``; its
      "default" is the current strategy).
    quiet: bool. No progress bar or sample captions, only a line per
      validation.
    overrides: ``section.field=value`` strings (``config.apply_overrides``)
      applied to the saved config of a resumed run too, e.g.
      "train.num_steps=3000" to train it further; the changed config is
      saved. ``config`` should already include them.
  """

  def __init__(self, config, run_dir, strategy=None, quiet=False,
               overrides=()):
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, runs.CONFIG_FILE)
    # The checkpoint manager's state file (not TensorFlow: see below).
    started = os.path.exists(config_path) and os.path.exists(os.path.join(
        run_dir, runs.CHECKPOINTS_DIR, "checkpoint"))
    changed = False  # A resumed run's config changed by ``overrides``.
    if started:
      saved = type(config).load(config_path)
      resumed = apply_overrides(saved, overrides)
      changed = resumed.to_dict() != saved.to_dict()
      if resumed.to_dict() != config.to_dict():
        print(f"resuming {run_dir} with its saved config.json" +
              (f" and {', '.join(overrides)}" if changed else ""))
      config = resumed
    # First of all TensorFlow: a multi-worker strategy starts its server.
    if strategy is None or isinstance(strategy, str):
      strategy = distribute.make_strategy(strategy or config.train.strategy)
    self.strategy = strategy
    self.is_chief = distribute.is_chief(strategy)  # Writes the run dir.
    distribute.check_precision(config.train.precision)
    distribute.global_to_replica_batch(config.train.batch_size, strategy)
    self.config = config
    self.run_dir = run_dir
    self.quiet = quiet or not self.is_chief
    tf.keras.utils.set_random_seed(config.train.seed)

    self.train_records = load_split_records(config, "train")
    self.val_records = load_split_records(config, "val")
    vocab_path = os.path.join(run_dir, runs.VOCAB_FILE)
    if started:
      self.vocab = Vocabulary.load(vocab_path)
    else:
      if config.train.init_from:  # The vocabulary of the starting weights.
        self.vocab = Vocabulary.load(os.path.join(config.train.init_from,
                                                  runs.VOCAB_FILE))
      else:
        self.vocab = Vocabulary.build(
            (tokenize(c) for r in self.train_records for c in r.captions),
            min_count=config.data.min_word_count)
      if self.is_chief:
        self.vocab.save(vocab_path)
    self.features = runs.cached_features(config)
    self.pipeline_config = pipeline.PipelineConfig(
        batch_size=config.train.batch_size,
        image_size=runs.image_size(config),
        max_caption_length=config.data.max_caption_length,
        shuffle_buffer=config.data.shuffle_buffer,
        augment=config.data.augment, seed=config.train.seed)
    self._build()
    # Only now, so a config that cannot resume the run is never saved.
    if self.is_chief and (not started or changed):
      config.save(config_path)

  def _build(self):
    config = self.config
    examples = pipeline.from_records(self.train_records, self.vocab,
                                     read_images=self.features is None)
    dataset = pipeline.batched(
        examples, self.pipeline_config, training=True, features=self.features,
        drop_remainder=self.strategy.num_replicas_in_sync > 1)
    with self.strategy.scope():
      with distribute.precision_scope(config.train.precision):
        initialised_at = None
        if self.features is None and config.train.init_from and \
            runs.trained_on_features(config.train.init_from):
          # From images, starting at a run on cached features (e.g. to
          # fine-tune the CNN under its decoder): that decoder, then the
          # CNN the features came from; on a resume too, so that the
          # variables and the optimiser's slots come in the same order.
          self.decoder, initialised_at = runs.restore_with_encoder(
              config, len(self.vocab), config.train.init_from)
        else:
          self.decoder = runs.build_decoder(
              config, len(self.vocab), with_encoder=self.features is None)
        first = self._attach(next(iter(dataset.take(1))))
        runs.build_from_batch(self.decoder, first)
      # Per-replica batches; a distributed iterator cannot be checkpointed
      # and is made after the restore (``_resume_input``).
      distributed = distribute.distribute_dataset(self.strategy, dataset)
      self.iterator = iter(dataset) if distributed is dataset else None
      # Slots for every variable that may ever train, the CNN's too, so the
      # optimiser is the same object before and after im2txt's second phase.
      self.optimizer = optimizers.make_optimizer(
          config, self._all_trainable_variables(), self._encoder_variables())
      self._encoder_training = encoder_batch_statistics(config)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.best_score = tf.Variable(-1.0, trainable=False, name="best_score")
      # Wall time trained so far, over every resume: the summary's "seconds".
      self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                 name="training_seconds")
      # The loss of the run's first step, kept over resumes (NaN where a
      # checkpoint predates it): the summary's "first_loss".
      self.first_loss = tf.Variable(math.nan, dtype=tf.float64,
                                    trainable=False, name="first_loss")
    # "best_bleu": its name from when BLEU-4 alone chose, kept so that
    # existing runs resume.
    state = dict(model=self.decoder, optimizer=self.optimizer, step=self.step,
                 best_bleu=self.best_score, seconds=self.seconds,
                 first_loss=self.first_loss)
    if self.iterator is not None:
      state["iterator"] = self.iterator
    # Where the dropout masks and sampled locations are in their streams
    # (a checkpoint without them, from before, resumes as it always did).
    state["random_draws"] = seed_generator_states(self.decoder)
    self.checkpoint = tf.train.Checkpoint(**state)
    # Non-chief workers write to a temporary folder (distribute.write_dir)
    # and every worker resumes from the chief's checkpoints.
    checkpoints = os.path.join(self.run_dir, runs.CHECKPOINTS_DIR)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, distribute.write_dir(checkpoints, self.strategy),
        max_to_keep=config.train.keep_checkpoints)
    self.best_manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=self.decoder, step=self.step),
        distribute.write_dir(os.path.join(self.run_dir, runs.BEST_DIR),
                             self.strategy), max_to_keep=1)
    latest = tf.train.latest_checkpoint(checkpoints)
    if latest:
      try:
        self.checkpoint.restore(latest)
      except (AssertionError, ValueError) as e:  # Another model's weights.
        first = (str(e).splitlines() or ["mismatch"])[0][:300]
        raise InputError(f"checkpoint does not match the model of the "
                         f"config ({first})", latest) from None
      print(f"resumed from {latest} at step {int(self.step.numpy())}")
    elif config.train.init_from:
      step = initialised_at
      if step is None:
        step = runs.restore_weights(self.decoder, config.train.init_from)
      print(f"initialised from {config.train.init_from} (step {step})")
    else:
      matrix = runs.embedding_source_matrix(config, self.vocab)
      if matrix is not None:
        self.decoder.word_embedding.embeddings.assign(matrix)
    self._resume_input(dataset, distributed, latest)
    self._step_fns = {}
    self.objective = objective_of(config, self.decoder, self.vocab,
                                  self.train_records)
    validated = self.val_records[:config.train.validation_images]
    self.selection = best_checkpoint_score(config)
    # CIDEr-D's corpus: the validated images' references.
    self._val_cider_d = CiderD({
        r.image_id: [tokenize(c) for c in r.captions] for r in validated})
    max_length = config.data.max_caption_length + 1
    self._greedy = tf.function(
        lambda f: search.greedy(self.decoder, f, max_length,
                                tokens=self.vocab.special_tokens()),
        reduce_retracing=True)
    self._encode = inference.encoder_fn(self.decoder)

  def _resume_input(self, dataset, distributed, latest):
    """Makes the distributed iterator, or the plain one where the checkpoint
    has no iterator state: either way it skips the batches already trained
    on, so that the data order is that of an unbroken run."""
    if self.iterator is not None and (not latest or any(
        name.startswith("iterator/") for name, _ in
        tf.train.list_variables(latest))):
      return
    done = int(self.step.numpy())
    if done:
      dataset = dataset.skip(done)
      distributed = distribute.distribute_dataset(self.strategy, dataset)
    if distributed is dataset:
      self.iterator = self.checkpoint.iterator = iter(dataset)
    else:
      self.iterator = iter(distributed)

  def _save(self, manager, step):
    manager.save(checkpoint_number=step)
    distribute.discard(manager.directory, self.strategy)

  def _all_trainable_variables(self):
    return self._while_encoder_trains(
        lambda: list(self.decoder.trainable_variables))

  def _encoder_variables(self):
    """The CNN's variables that train once it is fine-tuned ([] without
    an encoder in the model)."""
    encoder = self.decoder.encoder
    return [] if encoder is None else self._while_encoder_trains(
        lambda: list(encoder.trainable_variables))

  def _while_encoder_trains(self, read):
    encoder = self.decoder.encoder
    if encoder is None or encoder.trainable:
      return read()
    encoder.trainable = True
    try:
      return read()
    finally:
      encoder.trainable = False

  def _attach(self, batch):
    return self.features.attach(batch) if self.features else batch

  # -- One step ---------------------------------------------------------------

  def _train_encoder(self, step):
    after = self.config.train.train_encoder_after
    return self.decoder.encoder is not None and 0 <= after <= step

  def _step_fn(self, train_encoder, scheduled_sampling):
    """The compiled training step for one phase (encoder frozen or not,
    scheduled sampling or not)."""
    key = (train_encoder, scheduled_sampling)
    if key in self._step_fns:
      return self._step_fns[key]
    if self.decoder.encoder is not None:
      self.decoder.encoder.trainable = train_encoder
    variables = list(self.decoder.trainable_variables)
    forward_backward = self._forward_backward_fn(variables,
                                                 scheduled_sampling)
    replica_step = self._replica_step_fn(forward_backward, variables)
    reads_image_ids = self.config.train.scst  # SCST's reward reads them.

    @tf.function(reduce_retracing=True)
    def step_fn(batch, sampling_prob, seed):
      if not reads_image_ids:  # No strings in XLA.
        batch = {k: v for k, v in batch.items() if k != "image_id"}
      out = self.strategy.run(replica_step, args=(batch, sampling_prob, seed))
      return tf.nest.map_structure(
          lambda v: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v,
                                         axis=None), out)
    self._step_fns[key] = step_fn
    return step_fn

  def _forward_backward_fn(self, variables, scheduled_sampling):
    """forward_backward(batch, sampling_prob, seed, words) -> (logged,
    gradients, statistics) of one replica's batch: the compute, under XLA
    with ``train.jit_compile``. The objective's ``prepare`` (SCST's
    samples) runs outside the tape."""
    smoothing = self.config.train.label_smoothing
    loss_scaling = isinstance(self.optimizer,
                              keras.optimizers.LossScaleOptimizer)

    def forward_backward(batch, sampling_prob, seed, words):
      with tf.GradientTape() as tape:
        features = self.decoder.encode(batch,
                                       training=self._encoder_training)
        inputs = objectives.LossInputs(
            self.decoder, features, batch, seed, words, sampling_prob,
            scheduled_sampling, smoothing)
        with tape.stop_recording():
          prepared = self.objective.prepare(inputs)
        loss, logged = self.objective(inputs, prepared)
        scaled = self.optimizer.scale_loss(loss) if loss_scaling else loss
      grads = tape.gradient(scaled, variables)
      grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices)
               else g for g in grads]
      return logged, grads, self.objective.statistics(inputs)

    if self.config.train.jit_compile:
      # XLA compiles the forward and backward pass; the all-reduce and the
      # update stay outside, where every strategy supports them.
      return tf.function(forward_backward, jit_compile=True,
                         reduce_retracing=True)
    return forward_backward

  def _replica_step_fn(self, forward_backward, variables):
    """One replica's step: its share of the loss and gradients, the global
    gradient (summed over replicas, clipped), the update, then the
    objective's ``update`` hook on the statistics summed over replicas."""
    clip_norm = self.config.train.clip_norm
    replicas = self.strategy.num_replicas_in_sync
    loss_scaling = isinstance(self.optimizer,
                              keras.optimizers.LossScaleOptimizer)

    def replica_step(batch, sampling_prob, seed):
      batch = self._attach(batch)
      ctx = tf.distribute.get_replica_context()
      # The loss is a mean over the words of the global batch: each replica
      # adds its share, and the summed gradients are the global gradient.
      words = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                             tf.reduce_sum(batch["mask"]))
      logged, grads, statistics = forward_backward(batch, sampling_prob,
                                                   seed, words)
      grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
      # With loss scaling the gradients are ``scale`` times too large (the
      # optimizer divides them back, and skips the step if any is inf or
      # nan); clipping at clip_norm * scale is the same clip.
      scale = tf.convert_to_tensor(self.optimizer.dynamic_scale) \
          if loss_scaling else 1.0
      grad_norm = tf.linalg.global_norm(grads)
      if clip_norm:
        grads, _ = tf.clip_by_global_norm(grads, clip_norm * scale,
                                          grad_norm)
      # Keras' optimizer all-reduces (sums) gradients over replicas again;
      # ours are already summed (needed for a true global-norm clip), so
      # hand it each replica's share of the sum.
      self.optimizer.apply([g / replicas for g in grads], variables)
      if statistics:  # Summed first, so that every replica updates alike.
        self.objective.update(
            ctx.all_reduce(tf.distribute.ReduceOp.SUM, statistics))
      logged = ctx.all_reduce(tf.distribute.ReduceOp.SUM, logged)
      return {**logged, "grad_norm": grad_norm / scale}

    return replica_step

  # -- Validation -------------------------------------------------------------

  def validate(self):
    """Greedy captions {image id: str} of the first train.validation_images
    validation images, and their scores: {"val_bleu4": corpus BLEU-4,
    "val_cider_d": CIDEr-D}; ``selection`` names the one that picks the
    best checkpoint."""
    records = self.val_records[:self.config.train.validation_images]
    captions = inference.caption_records(
        self._encode, self.vocab, records, self.pipeline_config.image_size,
        self._greedy, self.features)
    scores = {"val_bleu4": bleu4(captions,
                                 {r.image_id: r.captions for r in records}),
              "val_cider_d": float(np.mean(self._val_cider_d.score(
                  list(captions),
                  [tokenize(c) for c in captions.values()])))}
    return scores, captions

  # -- The loop ---------------------------------------------------------------

  def train(self):
    """Trains to config.train.num_steps; returns a summary dict. SIGTERM
    or Ctrl-C saves the step it is at and raises ``TrainingStopped``."""
    t = self.config.train
    writer = tf.summary.create_file_writer(os.path.join(
        self.run_dir, "train")) if self.is_chief else \
        tf.summary.create_noop_writer()
    start = int(self.step.numpy())
    history, started = [], time.time()
    before = float(self.seconds.numpy())  # A resumed run's earlier parts.
    # Saved with each checkpoint; the time since the last one, whose steps
    # a resume trains again, is not counted twice.
    elapsed = lambda: before + time.time() - started  # noqa: E731
    self.history = history  # The loss of each step of this call.
    bar = tqdm(total=t.num_steps, initial=start, disable=self.quiet,
               desc=self.config.name, unit="step", dynamic_ncols=True)
    with stopping.StopRequests() as stop:
      for step in range(start, t.num_steps):
        done, loss, logged = self._train_step(step)
        history.append(loss)
        self._report_step(done, loss, logged, bar, writer)
        if done % t.validate_every == 0 or done == t.num_steps:
          self._validate_and_keep_best(done, writer, elapsed())
        # Agreed by every worker: the save is a collective operation.
        stop_now = done < t.num_steps and distribute.agree(
            self.strategy, float(stop.received is not None)) > 0
        if done % t.checkpoint_every == 0 or done == t.num_steps or stop_now:
          self.seconds.assign(elapsed())
          self._save(self.manager, done)
        if stop_now:
          bar.close()
          raise stopping.TrainingStopped(stop.received or signal.SIGTERM,
                                         done, self.run_dir)
    bar.close()
    self.seconds.assign(elapsed())
    first_loss = float(self.first_loss.numpy())
    return {"steps": int(self.step.numpy()),
            "first_loss": first_loss if math.isfinite(first_loss) else None,
            "final_loss": float(np.mean(history[-20:])) if history else None,
            f"best_{self.selection}": float(self.best_score.numpy()),
            "seconds": float(self.seconds.numpy()),
            "device": devices.describe()}

  def _train_step(self, step):
    """Trains step ``step`` (from 0); returns (steps done, its loss as a
    float, the step's logged tensors)."""
    t = self.config.train
    sampling = t.scheduled_sampling * min(1.0, step / max(
        1, t.scheduled_sampling_ramp))
    step_fn = self._step_fn(self._train_encoder(step),
                            t.scheduled_sampling > 0)
    logged = step_fn(next(self.iterator), tf.constant(sampling, tf.float32),
                     tf.constant([t.seed, step], tf.int32))
    self.step.assign_add(1)
    done = step + 1
    loss = float(logged["loss"])  # The one read every step needs.
    if not math.isfinite(loss):
      raise FloatingPointError(f"loss became {loss} at step {done}; the "
                               f"last good checkpoint is in {self.run_dir}")
    if done == 1:
      self.first_loss.assign(loss)
    return done, loss, logged

  def _report_step(self, done, loss, logged, bar, writer):
    """The progress bar's loss and perplexity; TensorBoard scalars every
    ``train.log_every`` steps."""
    t = self.config.train
    bar.update(1)
    postfix = {"loss": f"{loss:.3f}"}
    if "cross_entropy" in logged:  # SCST alone does not compute it.
      logged["perplexity"] = math.exp(min(float(logged["cross_entropy"]),
                                          50))
      postfix["ppl"] = f"{logged['perplexity']:.1f}"
    bar.set_postfix(postfix)
    if done % t.log_every == 0 or done == t.num_steps:
      with writer.as_default(step=done):
        for name, value in logged.items():
          tf.summary.scalar(name, value)
        tf.summary.scalar("learning_rate", float(tf.convert_to_tensor(
            self.optimizer.learning_rate)))

  def _validate_and_keep_best(self, step, writer, seconds):
    scores, captions = self.validate()
    # The same on every worker: the saves below are collective operations.
    scores = {name: distribute.agree(self.strategy, score)
              for name, score in scores.items()}
    with writer.as_default(step=step):
      for name, score in scores.items():
        tf.summary.scalar(name, score)
    line = f"step {step}/{self.config.train.num_steps}: validation " + \
        ", ".join(f"{_SCORE_NAMES[name]} {score:.4f}"
                  for name, score in scores.items()) + f" ({seconds:.0f} s)"
    if self.quiet:  # A logged run's progress, e.g. under im2txt-compare.
      if self.is_chief:
        print(line, flush=True)
    else:
      tqdm.write(line)
      for record in self.val_records[:3]:
        tqdm.write(f"  {record.image_id}: {captions[record.image_id]!r} "
                   f"(ref: {record.captions[0]!r})")
    if scores[self.selection] > float(self.best_score.numpy()):
      self.best_score.assign(scores[self.selection])
      self._save(self.best_manager, step)
