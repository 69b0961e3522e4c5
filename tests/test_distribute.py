"""Distributed training, mixed precision and XLA, on CPU.

MirroredStrategy over two logical CPU devices follows the one-device loss
trajectory with the same global batch (soft attention: its penalty too) and
keeps one value of every variable (hard attention: its reward baseline
too); a real two-worker
MultiWorkerMirroredStrategy run (two processes on 127.0.0.1) survives the
kill of one worker (the other ends by itself) and, restarted, resumes from
the chief's checkpoint with the same weights on both workers and the
one-device trajectory; float16, bfloat16 and XLA steps match float32.
Logical devices and worker servers must exist before TensorFlow starts, so
those runs are subprocesses (tests/distributed_run.py).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from im2txt_ext.errors import InputError
from im2txt_ext.training import distribute
from im2txt_ext.training.trainer import Trainer, learned_variables
from test_training import tiny_config

RUNNER = str(REPO / "tests" / "distributed_run.py")
STEPS = 4


def _config(scene_data, decoder=None, **train):
  # A frozen CNN: its BatchNorm then uses its moving statistics, the same on
  # any number of replicas (in training mode each replica normalises its
  # own part of the batch). Global batch 16, no dropout. A Transformer of
  # one block: what is tested is the trainer's (test_transformer checks
  # the stack of blocks).
  config = tiny_config(scene_data, **{
      "num_steps": STEPS, "checkpoint_every": 2, "validate_every": STEPS,
      "train_encoder_after": -1, **train})
  config.model.decoder = decoder or config.model.decoder
  if decoder == "transformer":
    config.model.decoder_options = {"num_layers": 1}
  return config


def _env(**extra):
  # One compute thread a process: these tests run two or three TensorFlow
  # processes at once beside the other test worker's.
  return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
              TF_NUM_INTRAOP_THREADS="1", **extra)


def _weights(result, name, kind="weights"):
  """Every weight (kind "weights"), or its copies on the replicas, [R, ...]
  (kind "local")."""
  count = sum(1 for k in result.files if k.startswith(f"{name}/{kind}/"))
  return [result[f"{name}/{kind}/{i}"] for i in range(count)]


def _train_in_subprocess(config, tmp_path, strategies):
  config_path = str(tmp_path / "config.json")
  config.save(config_path)
  done = subprocess.run(
      [sys.executable, RUNNER, f"--config={config_path}",
       f"--run_dir={tmp_path}", f"--strategies={strategies}", "--cpus=2",
       f"--output={tmp_path / 'out.npz'}"],
      env=_env(), capture_output=True, text=True, timeout=240)
  assert done.returncode == 0, done.stderr[-3000:]
  return np.load(tmp_path / "out.npz")


def _replicas_agree(result, name):
  for copies in _weights(result, name, "local"):
    assert len(copies) == 2
    np.testing.assert_array_equal(copies[1], copies[0])


def test_mirrored_on_two_cpus_matches_one_device(scene_data, tmp_path):
  """Soft attention's doubly stochastic penalty, divided by the words of
  the global batch as the cross-entropy, adds up over the replicas to the
  one-device term. (The trainer's split is the same for every decoder;
  the Transformer's parallel pass is checked in 16 bits and XLA below.)"""
  config = _config(scene_data, "soft_attention")
  result = _train_in_subprocess(config, tmp_path, "default,mirrored")
  assert int(result["default/replicas"]) == 1
  assert int(result["mirrored/replicas"]) == 2  # 8 captions per replica.
  one, two = result["default/history"], result["mirrored/history"]
  assert len(one) == len(two) == STEPS and one[-1] < one[0]
  np.testing.assert_allclose(two, one, rtol=0, atol=1e-5)
  for a, b in zip(_weights(result, "default"), _weights(result, "mirrored"),
                  strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
  _replicas_agree(result, "mirrored")
  assert tf.train.latest_checkpoint(str(tmp_path / "mirrored" /
                                        "checkpoints")).endswith(f"-{STEPS}")


def test_mirrored_hard_attention_keeps_one_reward_baseline(scene_data,
                                                           tmp_path):
  """Each replica samples its own locations, but the moving-average reward
  baseline is updated from the rewards of both: one value on both replicas
  (each kept its own before), which the checkpoint saves."""
  config = _config(scene_data, num_steps=2, checkpoint_every=2,
                   validate_every=2)
  config.model.decoder = "hard_attention"
  result = _train_in_subprocess(config, tmp_path, "mirrored")
  _replicas_agree(result, "mirrored")
  checkpoint = tf.train.load_checkpoint(tf.train.latest_checkpoint(
      str(tmp_path / "mirrored" / "checkpoints")))
  saved = [checkpoint.get_tensor(k) for k in
           checkpoint.get_variable_to_shape_map() if "reward_baseline" in k]
  assert len(saved) == 1 and saved[0] < 0.0  # 0.1 * a mean log-likelihood.


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _start_two_workers(config_path, run_dir, outputs, *args):
  """The processes of a two-worker run, each with its own TF_CONFIG; each
  one's output goes to ``<output>.log``."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
  procs = []
  for index, output in enumerate(outputs):
    tf_config = json.dumps({"cluster": cluster,
                            "task": {"type": "worker", "index": index}})
    with open(f"{output}.log", "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, RUNNER, f"--config={config_path}",
           f"--run_dir={run_dir}", "--strategies=multi_worker",
           f"--output={output}", *args], env=_env(TF_CONFIG=tf_config),
          stdout=log, stderr=subprocess.STDOUT))
  return procs


def _wait(procs, timeout):
  """Waits for the processes to end by themselves; kills any left after
  ``timeout`` seconds (and the test then fails)."""
  deadline = time.time() + timeout
  try:
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.time()))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _log(output):
  with open(f"{output}.log") as f:
    return f.read()


def test_two_workers_agree_survive_a_killed_worker_and_resume(scene_data,
                                                              tmp_path):
  config = _config(scene_data, num_steps=1000, validate_every=1000)
  config_path = str(tmp_path / "config.json")
  config.save(config_path)
  run_dir = tmp_path / "runs"
  checkpoints = run_dir / "multi_worker" / "checkpoints"

  # A long run; worker 1 is killed once the chief has saved step 2. The
  # chief notices (its peer stops sending heartbeats) and ends by itself.
  killed = [tmp_path / "a0.npz", tmp_path / "a1.npz"]
  procs = _start_two_workers(config_path, run_dir, killed)
  try:
    deadline = time.time() + 120
    while time.time() < deadline and procs[0].poll() is None and \
        not (checkpoints / "ckpt-2.index").exists():
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    _wait(procs[:1], timeout=120)
  finally:
    _wait(procs, timeout=1)
  assert procs[1].returncode == -signal.SIGKILL
  assert procs[0].returncode not in (0, -signal.SIGKILL), _log(killed[0])
  assert "task:1" in _log(killed[0])  # Names the lost worker.
  saved = int(tf.train.latest_checkpoint(str(checkpoints)).rsplit("-", 1)[1])
  assert 2 <= saved < 1000

  # Both restarted: they resume from the chief's checkpoint and train on.
  steps = saved + 2
  resumed = [tmp_path / "b0.npz", tmp_path / "b1.npz"]
  procs = _start_two_workers(config_path, run_dir, resumed,
                             f"--num_steps={steps}")
  _wait(procs, timeout=150)
  for p, output in zip(procs, resumed):
    assert p.returncode == 0, _log(output)[-3000:]
    assert f"checkpoints/ckpt-{saved} at step {saved}" in _log(output)
  chief, worker = (np.load(output) for output in resumed)
  assert int(chief["multi_worker/replicas"]) == 2
  np.testing.assert_array_equal(chief["multi_worker/history"],
                                worker["multi_worker/history"])
  for a, b in zip(_weights(chief, "multi_worker"),
                  _weights(worker, "multi_worker"), strict=True):
    np.testing.assert_array_equal(a, b)

  # The same steps as one device with the same global batch.
  reference = Trainer(config, str(tmp_path / "one"), quiet=True)
  reference.config.train.num_steps = steps
  reference.train()
  np.testing.assert_allclose(chief["multi_worker/history"],
                             reference.history[saved:], rtol=0, atol=1e-5)
  for a, b in zip([v.numpy() for v in learned_variables(reference.decoder)],
                  _weights(chief, "multi_worker"), strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)

  # Only the chief wrote the run directory; the worker's folder is gone.
  run = run_dir / "multi_worker"
  assert sorted(os.listdir(run)) == ["best", "checkpoints", "config.json",
                                     "train", "vocab.txt"]
  assert tf.train.latest_checkpoint(str(checkpoints)).endswith(f"-{steps}")


@pytest.mark.parametrize("decoder", ["show_and_tell", "soft_attention",
                                     "transformer"])
def test_16_bit_and_xla_steps_match_float32(scene_data, tmp_path, decoder):
  def train(name, **options):
    config = _config(scene_data, decoder, num_steps=3, validate_every=3,
                     **options)
    trainer = Trainer(config, str(tmp_path / name), quiet=True)
    trainer.train()  # Validation runs greedy search in the same precision.
    return trainer

  reference = train("float32").history
  for name, options, tolerance in [
      ("bfloat16", {"precision": "mixed_bfloat16"}, 2e-2),
      ("float16", {"precision": "mixed_float16"}, 5e-3),
      ("xla", {"jit_compile": True}, 1e-4)]:
    if decoder == "transformer" and name == "float16":
      continue  # float16 differs by loss scaling, the shared trainer's,
      #           tested with the other decoders.
    trainer = train(name, **options)
    np.testing.assert_allclose(trainer.history, reference, rtol=0,
                               atol=tolerance, err_msg=name)
    layer = trainer.decoder.logits_layer
    expected = {"bfloat16": "bfloat16", "float16": "float16"}.get(name,
                                                                 "float32")
    assert layer.compute_dtype == expected
    assert layer.kernel.dtype == "float32"  # Weights stay float32.
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer
                      ) == (name == "float16")
    features = trainer.decoder.encode({"image": tf.zeros([2, 32, 32, 3])})
    logits, _ = trainer.decoder.teacher_forced(
        features, tf.ones([2, 3], tf.int32))
    assert logits.dtype == tf.float32  # Softmax and loss in float32.


def test_strategy_and_precision_errors(scene_data, tmp_path, monkeypatch):
  # No TPU here: the command says so in one line.
  done = subprocess.run(
      [sys.executable, "-m", "im2txt_ext.cli.train", "--strategy=tpu",
       f"--run_dir={tmp_path / 'tpu'}"], env=_env(), capture_output=True,
      text=True, timeout=120)
  assert done.returncode == 2, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1].startswith(
      "error: strategy tpu: no TPU available")
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(InputError, match="multi_worker needs TF_CONFIG"):
    distribute.make_strategy("multi_worker")
  with pytest.raises(InputError, match="unknown strategy 'gpus'"):
    distribute.make_strategy("gpus")
  two = types.SimpleNamespace(num_replicas_in_sync=2)
  assert distribute.global_to_replica_batch(16, two) == 8
  with pytest.raises(InputError, match="15 is not divisible by the 2"):
    distribute.global_to_replica_batch(15, two)
  with pytest.raises(InputError, match="unknown precision 'float8'"):
    Trainer(_config(scene_data, precision="float8"), str(tmp_path / "run"))
  dataset = tf.data.Dataset.range(4)
  assert distribute.distribute_dataset(tf.distribute.get_strategy(),
                                       dataset) is dataset
  with pytest.raises(InputError, match="shard_by"):
    distribute.distribute_dataset(tf.distribute.get_strategy(), dataset,
                                  "rows")
  assert distribute.is_chief(tf.distribute.get_strategy())
