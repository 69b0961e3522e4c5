"""Where training runs: tf.distribute strategies by name, the distributed
input, chief-only writing, and mixed precision.

Strategies (``train.strategy``, or ``im2txt-train --strategy``):
  default       one device (the first GPU, else the CPU);
  mirrored      MirroredStrategy: one replica per local GPU (without GPUs,
                per logical CPU device; one unless configured);
  multi_worker  MultiWorkerMirroredStrategy over the machines named in
                ``TF_CONFIG``, as TensorFlow documents it;
  tpu           TPUStrategy on the TPU named by ``--tpu`` (or the local one).

``train.batch_size`` is the global batch: each of R replicas gets B / R
captions of every global batch. In a multi-worker run every process runs
the same loop; the chief (task "chief", else worker 0) writes the run
directory, the others write their checkpoints to a temporary folder that is
removed after each save (all workers must save: reading synchronised
variables is a collective operation).
"""

import contextlib
import json
import os

import keras
import tensorflow as tf

from im2txt_ext.errors import InputError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
_STRATEGIES_MADE = {}  # (name, tpu) -> the one strategy of this process.


def make_strategy(name, tpu=""):
  """The tf.distribute.Strategy of a name in STRATEGIES, made once per
  process (two instances would mix up their collective operations).

  Call it before anything else touches TensorFlow's devices: the
  multi-worker strategy must start its server first.

  Args:
    name: str, one of STRATEGIES.
    tpu: str. TPU name or grpc:// address for "tpu" ("" = the local TPU).
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if (name, tpu) not in _STRATEGIES_MADE:
    _STRATEGIES_MADE[name, tpu] = _new_strategy(name, tpu)
  return _STRATEGIES_MADE[name, tpu]


def _new_strategy(name, tpu):
  if name == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or \
        tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  if name == "multi_worker":
    raw = os.environ.get("TF_CONFIG", "")
    try:
      cluster = json.loads(raw)["cluster"] if raw else None
    except (ValueError, KeyError, TypeError):
      raise InputError("TF_CONFIG is not JSON with a \"cluster\" "
                       "entry") from None
    if not cluster:
      raise InputError("strategy multi_worker needs TF_CONFIG naming the "
                       "cluster and this task, e.g. {\"cluster\": "
                       "{\"worker\": [\"host1:port\", \"host2:port\"]}, "
                       "\"task\": {\"type\": \"worker\", \"index\": 0}}")
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # pylint: disable=broad-except
      first = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise InputError(f"strategy tpu: no TPU available ({first})") from None
    return tf.distribute.TPUStrategy(resolver)
  raise InputError(f"unknown strategy {name!r}: use "
                   + ", ".join(STRATEGIES))


def is_multi_worker(strategy):
  """Whether the strategy spans several processes (TensorFlow's own test)."""
  # pylint: disable-next=protected-access
  return strategy.extended._in_multi_worker_mode()


def task(strategy):
  """(task type, task id) of this process; (None, None) outside a cluster."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not is_multi_worker(strategy):
    return None, None
  return resolver.task_type, resolver.task_id


def is_chief(strategy):
  """Whether this process writes the run directory (TensorFlow's rule)."""
  task_type, task_id = task(strategy)
  if task_type is None or task_type == "chief":
    return True
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and "chief" not in cluster


def write_dir(path, strategy):
  """``path`` on the chief; a per-worker temporary folder beside it
  elsewhere (remove it after writing, see ``discard``)."""
  if is_chief(strategy):
    return path
  task_type, task_id = task(strategy)
  return os.path.join(os.path.dirname(path), f"workertemp_{task_type}_"
                      f"{task_id}", os.path.basename(path))


def discard(path, strategy):
  """Removes what a non-chief process wrote to ``write_dir(...)``."""
  if not is_chief(strategy) and tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(os.path.dirname(path))


def global_to_replica_batch(batch_size, strategy):
  """Captions per replica of a global batch; an error unless it divides."""
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise InputError(f"train.batch_size {batch_size} is not divisible by "
                     f"the {replicas} replicas of the strategy")
  return batch_size // replicas


def distribute_dataset(strategy, dataset, shard_by="data"):
  """Per-replica batches from a dataset of global batches.

  Under the default strategy the dataset itself comes back (its iterator
  can be checkpointed). Elsewhere each global batch is split over the
  replicas; between workers, ``shard_by`` "data" has every worker read the
  whole stream and keep its part of each batch (in-memory records, cached
  features), "file" gives each worker its own files (TFRecord shards;
  needs at least as many files as workers).
  """
  policies = {"data": tf.data.experimental.AutoShardPolicy.DATA,
              "file": tf.data.experimental.AutoShardPolicy.FILE}
  if shard_by not in policies:
    raise InputError(f"shard_by must be data or file, got {shard_by!r}")
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = policies[shard_by]
  distributed = strategy.experimental_distribute_dataset(
      dataset.with_options(options))
  # The default strategy hands the dataset back: keep it as it was.
  return dataset if isinstance(distributed, tf.data.Dataset) else distributed


def agree(strategy, value):
  """A float every worker agrees on: the mean of each one's ``value``.

  Decisions that trigger collective operations (saving the best
  checkpoint) must be the same on every worker; this makes them so.
  """
  if not is_multi_worker(strategy):
    return value
  local = strategy.experimental_distribute_values_from_function(
      lambda _: tf.constant(value, tf.float32))
  return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, local, axis=None))


# -- Mixed precision ---------------------------------------------------------

def check_precision(name):
  if name not in PRECISIONS:
    raise InputError(f"unknown precision {name!r}: use "
                     + ", ".join(PRECISIONS))
  return name


@contextlib.contextmanager
def precision_scope(name):
  """Layers created inside compute in ``name`` ("mixed_float16": float16
  math, float32 variables); the global Keras policy is restored after."""
  previous = keras.mixed_precision.dtype_policy()
  keras.mixed_precision.set_dtype_policy(check_precision(name))
  try:
    yield
  finally:
    keras.mixed_precision.set_dtype_policy(previous)
