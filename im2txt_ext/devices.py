"""Which machine a figure was measured on, in words."""

import os
import platform

import tensorflow as tf


def describe():
  """The GPUs' name and count, else the CPU model and its core count."""
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{details.get('device_name', 'GPU')} x{len(gpus)}"
  model = platform.processor() or "cpu"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f
                   if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model} ({os.cpu_count()} cores)"
