"""What every benchmark shares: the JSON line (with the device it ran on),
timing and a matmul peak measured in the same run."""

import json
import os
import time

import tensorflow as tf

from im2txt_ext import devices


def emit(name, value, unit, batch=None, sizes=None, **extra):
  """Prints one figure as a JSON line and returns it; ``load`` is the
  machine's 1-minute load average then, to tell a busy machine's figures."""
  line = {"name": name, "value": round(float(value), 3), "unit": unit,
          "device": devices.describe(), "batch": batch, "sizes": sizes or {},
          "load": round(os.getloadavg()[0], 2), **extra}
  print(json.dumps(line), flush=True)
  return line


def time_call(fn, warmup=2, min_seconds=3.0, min_runs=3):
  """Median seconds per call of ``fn()`` after ``warmup`` calls."""
  return time_calls({"": fn}, warmup, min_seconds, min_runs)[""]


def time_calls(fns, warmup=2, min_seconds=3.0, min_runs=3):
  """Median seconds per call of each of ``fns`` ({name: fn}), after
  ``warmup`` calls each, timed in turns (one call of each per round) for
  ``min_seconds`` per function: a change of load on a shared machine then
  slows them all alike, and their ratios stay fair."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  started = time.perf_counter()
  while (min(map(len, times.values())) < min_runs or
         time.perf_counter() - started < min_seconds * len(fns)):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def matmul_peak_gflops(sizes=(1024, 2048, 4096)):
  """Measured float32 GFLOP/s: the best of square n x n x n matmuls
  (2 n^3 FLOPs each), the machine's practical peak for dense arithmetic."""
  best = 0.0
  for n in sizes:
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = time_call(lambda: matmul().numpy(), min_seconds=1.5)
    best = max(best, 2 * n ** 3 / seconds / 1e9)
  return best
