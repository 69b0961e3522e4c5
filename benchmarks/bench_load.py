"""Load test of im2txt-serve on 127.0.0.1, with and without dynamic batching.

  make bench-load      (python -m benchmarks.bench_load)
  python -m benchmarks.bench_load --export=DIR --images='DIR/*.jpg'
  python -m benchmarks.bench_load --seconds=3 --clients=1,8   (a quick one)

Exports bench_serve's untrained standard-size model (EfficientNet-Lite0 at
224 px, a Show and Tell decoder, beam 3, 20 words; ``--decoder``, or
``--run_dir`` a trained run) unless ``--export`` names one, starts two
servers (``python -m im2txt_ext.serve`` on free ports of 127.0.0.1): one
batching (``--max_batch``, ``--batch_timeout_ms``) and one with
``--max_batch=1``. Then for each number of ``--clients`` in turn, each
server gets that many client threads posting 640x480 JPEGs (or the
``--images`` files), one request after the other on a kept-alive
connection, for ``--seconds``: requests/s, p50 and p99 latency and failed
requests. Both servers are warmed up first; their resident memory (VmRSS)
is read after the warm-up and at the end. Then the servers are stopped.
Targets (issue 24): no failed requests, at the most clients at least twice
the unbatched server's throughput, memory growth under 5%.
"""

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

from benchmarks import bench_serve, common
from im2txt_ext import export

FLAGS = flags.FLAGS
flags.DEFINE_string("export", "", "Exported model to serve instead of the "
                    "untrained standard-size one (or --run_dir's).")
flags.DEFINE_list("clients", ["1", "8", "32"], "Concurrent clients, in turn.")
flags.DEFINE_float("seconds", 20, "Seconds of load per number of clients "
                   "and server.", lower_bound=0.1)
flags.DEFINE_integer("max_batch", 16, "The batching server's --max_batch.")
flags.DEFINE_float("batch_timeout_ms", 10, "The batching server's "
                   "--batch_timeout_ms.")

WARMUP_SECONDS = 3
SERVERS = {"": "batched", "_unbatched": "each request alone"}


class Server:
  """``python -m im2txt_ext.serve`` in a subprocess on a free port of
  127.0.0.1, its request log in ``log_path``."""

  def __init__(self, export_dir, log_path, *flag_args):
    self._log = open(log_path, "w")
    self.process = subprocess.Popen(
        [sys.executable, "-m", "im2txt_ext.serve", f"--export={export_dir}",
         "--host=127.0.0.1", "--port=0", *flag_args],
        stdout=subprocess.PIPE, stderr=self._log, text=True)
    self.log_path = log_path
    self.port = None

  def wait_ready(self):
    """Reads the port from the server's "serving ... on URL" line."""
    line = self.process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not found:
      self.stop()
      with open(self.log_path) as f:
        raise SystemExit(f"error: the server did not start: {line}"
                         f"{f.read()[-2000:]}")
    self.port = int(found.group(1))

  def rss_mb(self):
    """Resident memory, MB (VmRSS in /proc/<pid>/status)."""
    with open(f"/proc/{self.process.pid}/status") as f:
      kb = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
    return int(kb) / 1024

  def health(self):
    connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                            timeout=60)
    connection.request("GET", "/healthz")
    return json.load(connection.getresponse())

  def stop(self):
    self.process.terminate()
    self.process.wait(timeout=60)
    self._log.close()


def load(port, images, clients, seconds):
  """``clients`` threads posting ``images`` in turn for ``seconds``: the
  latencies (s) of the answered requests, the failures, the seconds until
  the last request ended."""
  latencies, failures = [], []
  deadline = time.perf_counter() + seconds

  def client(first):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    turn = first
    while time.perf_counter() < deadline:
      started = time.perf_counter()
      try:
        connection.request("POST", "/api/caption", images[turn % len(images)],
                           {"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        response.read()
        ok = response.status == 200
      except (OSError, http.client.HTTPException):
        connection.close()  # Reconnects at the next request.
        ok = False
      (latencies if ok else failures).append(time.perf_counter() - started)
      turn += clients
    connection.close()
  started = time.perf_counter()
  threads = [threading.Thread(target=client, args=(i,))
             for i in range(clients)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return latencies, len(failures), time.perf_counter() - started


def export_to_serve(folder):
  """The export folder (--export, else --run_dir's or the untrained
  standard-size model's, exported as bench_serve exports it) and the sizes
  that say which."""
  if FLAGS.export:
    return FLAGS.export, {"export": FLAGS.export, "jpeg": "640x480"}
  if FLAGS.run_dir:
    run_dir, sizes = FLAGS.run_dir, {"run_dir": FLAGS.run_dir,
                                     "jpeg": "640x480"}
  else:
    run_dir = os.path.join(folder, "run")
    sizes = {**bench_serve.SIZES, "decoder": FLAGS.decoder}
    bench_serve.untrained_run(run_dir)
  model_dir = os.path.join(folder, "model")
  export.export(run_dir, model_dir, beam_size=bench_serve.BEAM,
                max_length=bench_serve.LENGTH, top_k=1)
  return model_dir, sizes


def main(argv):
  del argv
  clients = [int(n) for n in FLAGS.clients]
  with tempfile.TemporaryDirectory() as folder:
    model_dir, sizes = export_to_serve(folder)
    sizes.update(max_batch=FLAGS.max_batch, seconds=FLAGS.seconds,
                 batch_timeout_ms=FLAGS.batch_timeout_ms,
                 threads=max(32, *clients))
    images = list(bench_serve.images_to_time(sizes).numpy())
    threads = f"--threads={sizes['threads']}"
    servers = {
        "": Server(model_dir, os.path.join(folder, "batched.log"), threads,
                   f"--max_batch={FLAGS.max_batch}",
                   f"--batch_timeout_ms={FLAGS.batch_timeout_ms}"),
        "_unbatched": Server(model_dir, os.path.join(folder, "alone.log"),
                             threads, "--max_batch=1")}
    try:
      rss = {}
      for suffix, server in servers.items():
        server.wait_ready()
        load(server.port, images, max(clients), WARMUP_SECONDS)
        rss[suffix] = server.rss_mb()
      throughput = {}
      # Each number of clients on both servers in turn: a change of the
      # machine's load slows both alike.
      for count in clients:
        for suffix, server in servers.items():
          before = server.health()["batching"]
          latencies, failed, seconds = load(server.port, images, count,
                                            FLAGS.seconds)
          after = server.health()["batching"]
          extra = {"clients": count, "server": SERVERS[suffix]}
          if after:
            extra["images_per_call"] = round(
                (after["images"] - before["images"]) /
                max(after["batches"] - before["batches"], 1), 2)
          throughput[suffix, count] = len(latencies) / seconds
          common.emit(f"load_throughput_{count}_clients{suffix}",
                      throughput[suffix, count], "requests/s", None, sizes,
                      requests=len(latencies), **extra)
          for q in (50, 99):
            common.emit(f"load_latency_p{q}_{count}_clients{suffix}",
                        np.percentile(latencies, q) * 1e3 if latencies
                        else float("nan"), "ms", None, sizes, **extra)
          common.emit(f"load_failed_{count}_clients{suffix}", failed,
                      "requests", None, sizes, target="0", met=failed == 0,
                      **extra)
      for suffix, server in servers.items():
        after = server.rss_mb()
        common.emit(f"server_rss_growth{suffix}", after / rss[suffix] - 1,
                    "fraction", None, sizes, server=SERVERS[suffix],
                    rss_before_mb=round(rss[suffix], 1),
                    rss_after_mb=round(after, 1), target="< 0.05",
                    met=bool(after / rss[suffix] < 1.05))
    finally:
      for server in servers.values():
        server.stop()
  most = max(clients)
  speedup = throughput["", most] / max(throughput["_unbatched", most], 1e-9)
  common.emit(f"load_batching_speedup_{most}_clients", speedup, "ratio",
              None, sizes, target=">= 2", met=bool(speedup >= 2))


if __name__ == "__main__":
  app.run(main)
