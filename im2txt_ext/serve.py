r"""Demo web page and JSON API over an exported model (im2txt_ext/export.py).

  make serve                      (exports runs/demo first if needed)
  python -m im2txt_ext.serve --export=exports/demo --port=8000

Open http://127.0.0.1:8000/, drop or pick a JPEG or PNG, and read the
captions with their probabilities (and logs) and the time the request took;
the beam size and number of captions are controls sent with the request.
The image shows 320 to 512 px on its longer side; for attention models,
pointing at a word shows where the model looked, and a click or tap keeps
that word's map drawn (drawn client-side from the maps).

  curl -F image=@photo.jpg http://127.0.0.1:8000/api/caption
  curl --data-binary @photo.jpg \
      'http://127.0.0.1:8000/api/caption?beam_size=5&k=3'
  curl --data-binary @photo.jpg 'http://127.0.0.1:8000/api/caption?\
no_repeat_ngram_size=3&no_bad_endings=1&length_penalty=0.7'

Search options (query or form fields, each optional: the export's default
sizes and the library's decoding defaults otherwise): beam_size,
max_length, k (captions returned), length_penalty, min_length,
no_bad_endings (0/1), no_repeat_ngram_size, repetition_penalty,
diversity_groups, diversity_strength; see ``im2txt_ext.search``.

The API answers {"captions": [{"caption", "log_prob", "words"[,
"attention": one [L] map per word]}], "grid": [h, w] or null, "time_ms":
the server's time for the request, upload to answer}, or
{"error": message} with status 400 (not a readable JPEG/PNG), 413 (upload
or image too large), 415 (another format), 404 (no such page), 405 (wrong
method) or 500. The server only needs TensorFlow and the export: it never
builds a model itself. GET /healthz answers {"status": "ok", "export",
"batching": {"max_batch", "timeout_ms", "batches", "images"} or null}.

It runs on waitress, a production WSGI server in pure Python: one process,
--threads request threads around one loaded model, which is what dynamic
batching needs (every request meets the others in one queue, before one
copy of the weights), and it runs wherever TensorFlow does. gunicorn forks
worker processes instead, each of which would load its own model and batch
only its own requests, and it does not run on Windows.

Dynamic batching: concurrent requests that ask for the same search options
go through the export's signature together, at most --max_batch images per
call, waiting at most --batch_timeout_ms for more after the first arrives
(im2txt_ext.batching); an image that fails its batch is retried alone, so
it fails only its own request. --max_batch=1 serves each request alone.

Each request is logged as one line, e.g. "POST /api/caption 200 48.2 ms"
(logger im2txt_ext.serve; --logger_levels=im2txt_ext.serve:WARNING
silences it).
"""

import functools
import io
import logging
import math
import signal
import sys
import time

from absl import flags
import flask
from PIL import Image
import waitress
from werkzeug import exceptions

from im2txt_ext import batching, decoding, errors
from im2txt_ext.cli import run

FLAGS = flags.FLAGS
_log = logging.getLogger(__name__)
_log.setLevel(logging.INFO)  # Request lines, whatever absl's verbosity.

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}
# The search options of caption_with_options besides its sizes
# (decoding.SIGNATURE_SIZES), with the library's defaults (their types too).
_RULES = {name: decoding.DEFAULTS[name]
          for name in decoding.SIGNATURE_OPTIONS}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class BadImage(Exception):
  """An upload the model must not see; ``status`` is the HTTP status."""

  def __init__(self, message, status=400):
    super().__init__(message)
    self.status = status


def check_image(data, max_pixels=MAX_PIXELS):
  """Refuses non-JPEG/PNG bytes and decompression bombs, from the header."""
  if not data:
    raise BadImage("no image in the request")
  if not any(data.startswith(magic) for magic in _MAGIC):
    raise BadImage("only JPEG and PNG images are accepted", 415)
  try:
    with Image.open(io.BytesIO(data)) as image:
      width, height = image.size  # Header only: nothing decoded yet.
  except Image.DecompressionBombError:
    raise BadImage(f"image has more than {max_pixels} pixels", 413) from None
  except Exception:  # PIL raises many types for corrupt headers.
    raise BadImage("not a readable JPEG/PNG image") from None
  if width * height > max_pixels:
    raise BadImage(f"image is {width}x{height} pixels, more than the "
                   f"{max_pixels / 1e6:g} megapixels allowed", 413)


class Model:
  """An exported captioner, called from any request thread.

  Args:
    path: str. SavedModel folder written by ``im2txt-export``.
    max_batch: int. Most images in one call of the signature; concurrent
      calls with the same options share one (1 or 0: each call alone).
    batch_timeout_ms: float. Longest wait for more images after the first.
  """

  def __init__(self, path, max_batch=1, batch_timeout_ms=10):
    # Imported here: --help needs no TensorFlow.
    import tensorflow as tf
    from im2txt_ext import export
    self._tf = tf
    self.path = path
    self._saved = export.load(path)
    self._default = self._saved.signatures["serving_default"]
    self._options = self._saved.signatures["caption_with_options"]
    # The export's default sizes, where it says them (exports before the
    # search rules did not).
    self.default_sizes = export.default_sizes(self._saved)
    self._option_values = functools.partial(export.option_values, self._saved)
    self._batcher = batching.Batcher(
        self._caption_batch, max_batch, batch_timeout_ms / 1e3) \
        if max_batch > 1 else None

  def caption(self, data, options=None):
    """Image bytes -> list of {caption, log_prob, words[, attention]}, and
    the attention grid [h, w] or None. ``options``: {} for the export's
    defaults, or some of the options of ``_options``."""
    key = self._signature_inputs(options or {})
    try:
      if self._batcher is None:
        return self._caption_batch(key, [data])[0]
      return self._batcher.submit(key, data).result()
    except self._tf.errors.InvalidArgumentError as e:
      raise BadImage(errors.graph_error_line(e.message)) from None

  def health(self):
    """What GET /healthz answers: the export and the batching so far."""
    batcher = self._batcher
    return {"status": "ok", "export": self.path, "batching": None
            if batcher is None else {
                "max_batch": batcher.max_batch,
                "timeout_ms": round(batcher.timeout_s * 1e3, 3),
                "batches": batcher.batches, "images": batcher.items}}

  def close(self):
    """Finishes the requests queued for a batch and stops batching."""
    if self._batcher is not None:
      self._batcher.close()

  def _signature_inputs(self, options):
    """((name, value), ...) of every input of ``_options`` but the images
    (``export.option_values``), sorted; () for ``_default``. Equal for
    requests that may share a call."""
    if not options:
      return ()
    try:
      return tuple(sorted(self._option_values(options).items()))
    except errors.InputError as e:
      raise BadImage(str(e)) from None

  def _caption_batch(self, key, images):
    """One call of the signature for a list of image bytes: a (captions,
    grid) pair per image."""
    tf = self._tf
    batch = tf.constant(images)
    if key:
      out = self._options(images=batch, **{
          name: tf.constant(value) for name, value in key})
    else:
      out = self._default(images=batch)
    out = {name: value.numpy() for name, value in out.items()}
    return [_results(out, i) for i in range(len(images))]


def _results(out, i):
  """Image ``i``'s captions in a signature's outputs (numpy arrays), and
  the attention grid."""
  results, grid = [], None
  for k, text in enumerate(out["captions"][i]):
    words = text.decode().split()
    result = {"caption": " ".join(words),
              "log_prob": round(float(out["log_probs"][i, k]), 4),
              "words": words}
    if "attention" in out:
      maps = out["attention"][i, k, :len(words)]  # [T, L]
      side = math.isqrt(maps.shape[-1])
      grid = [side, maps.shape[-1] // side]
      result["attention"] = maps.round(4).tolist()
    results.append(result)
  return results, grid


def _options(args):
  """Search options from the query or form: those given, typed (the sizes,
  min_length, no_repeat_ngram_size and diversity_groups integers,
  length_penalty, repetition_penalty and diversity_strength numbers,
  no_bad_endings 0/1)."""
  options = {}
  for name in decoding.SIGNATURE_SIZES + tuple(_RULES):
    text = args.get(name)
    if text is None or text == "":
      continue
    kind = type(_RULES.get(name, 0))
    if kind is bool:
      if text.lower() not in _TRUE + _FALSE:
        raise BadImage(f"{name} must be 0 or 1, got {text!r}")
      options[name] = text.lower() in _TRUE
      continue
    try:
      options[name] = kind(text)
    except ValueError:
      raise BadImage(f"{name} must be "
                     f"{'an integer' if kind is int else 'a number'}, got "
                     f"{text!r}") from None
  return options


def create_app(model, max_upload_bytes=MAX_UPLOAD_BYTES,
               max_pixels=MAX_PIXELS):
  """The Flask app: the page at /, the JSON API at POST /api/caption, the
health check at GET /healthz; each request logged with its time."""
  web = flask.Flask(__name__)
  web.config["MAX_CONTENT_LENGTH"] = max_upload_bytes

  @web.before_request
  def start_clock():
    flask.g.started = time.perf_counter()

  @web.after_request
  def log_request(response):
    request = flask.request
    _log.info("%s %s %d %.1f ms", request.method, request.path,
              response.status_code,
              (time.perf_counter() - flask.g.started) * 1e3)
    return response

  # The page's search controls start at the export's sizes (empty, so
  # not sent, where the export does not say them).
  sizes = getattr(model, "default_sizes", {})
  page_text = PAGE.replace("MAX_MB", f"{max_upload_bytes / 2**20:g}")
  for name in ("beam_size", "k"):
    page_text = page_text.replace(f"@{name}@", str(sizes.get(name, "")))

  @web.get("/")
  def page():
    return flask.Response(page_text, mimetype="text/html")

  @web.post("/api/caption")
  def caption():
    request = flask.request
    fields = dict(request.args)
    if request.mimetype == "multipart/form-data":  # A form's "image" file.
      upload = request.files.get("image")
      data = upload.read() if upload else b""
      fields.update(request.form)
    else:  # The raw bytes, whatever the content type says.
      data = request.get_data()
    options = _options(fields)
    check_image(data, max_pixels)
    captions, grid = model.caption(data, options)
    took = (time.perf_counter() - flask.g.started) * 1e3
    return flask.jsonify(captions=captions, grid=grid,
                         time_ms=round(took, 1))

  @web.get("/healthz")
  def healthz():
    return flask.jsonify(model.health())

  @web.errorhandler(BadImage)
  def bad_image(e):
    return flask.jsonify(error=str(e)), e.status

  @web.errorhandler(exceptions.RequestEntityTooLarge)
  def too_large(e):
    del e
    return flask.jsonify(error=f"upload larger than "
                         f"{max_upload_bytes / 2**20:g} MB"), 413

  @web.errorhandler(exceptions.HTTPException)
  def http_error(e):  # 404, 405, 500 (an unexpected error) and the like.
    request = flask.request
    allowed = getattr(e, "valid_methods", None)
    headers = {"Allow": ", ".join(allowed)} if allowed else {}
    return flask.jsonify(error=f"{e.name}: {request.method} {request.path}"
                         + (f" (allowed: {', '.join(allowed)})"
                            if allowed else "")), e.code, headers

  return web


def make_server(model, host="127.0.0.1", port=8000, threads=32,
                **app_args):
  """The app on a waitress server with ``threads`` request threads (at
  least the model's max_batch, to fill a batch); port 0 picks a free one
  (``effective_port``). ``run()`` serves until ``close()``."""
  app = create_app(model, **app_args)
  # Bodies far over the app's limit are refused before they are read.
  limit = app.config["MAX_CONTENT_LENGTH"] + 2**20
  return waitress.create_server(app, host=host, port=port, threads=threads,
                                max_request_body_size=limit)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>im2txt captions</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: sans-serif; max-width: 46rem; margin: 2rem auto;
        padding: 0 1rem; }
 #drop { border: 2px dashed #888; padding: 2rem; text-align: center; }
 #drop.over { background: #eef; }
 #search { margin: 1rem 0; }
 #search label { margin-right: 1rem; }
 #search input { width: 3.5rem; }
 #view { display: block; margin: 1rem 0; max-width: 100%; height: auto; }
 #error { color: #b00; }
 #time, .score, .empty { color: #666; }
 .word { cursor: pointer; padding: 0 .1rem; }
 .word:hover, .word:focus, .word.on { background: #fd6; }
 .word.on { outline: 1px solid #c80; }
 .score { font-size: .9em; margin-left: .5rem; }
</style></head><body>
<h1>Caption an image</h1>
<div id="drop">Drop a JPEG or PNG here (at most MAX_MB MB), or
 <input type="file" id="file" accept="image/jpeg,image/png"></div>
<form id="search" novalidate>
 <label>Beam size <input id="beam_size" inputmode="numeric"
  value="@beam_size@" placeholder="default"></label>
 <label>Captions <input id="k" inputmode="numeric" value="@k@"
  placeholder="default"></label>
 <button type="submit">Caption again</button>
</form>
<p id="status"></p><p id="error"></p>
<canvas id="view" width="0" height="0"></canvas>
<ol id="results"></ol>
<p id="time"></p>
<script>
const $ = (id) => document.getElementById(id);
// The image, its attention grid [h, w], the word whose map stays drawn
// ({span, map}, after a click or tap); images picked, requests made, the
// request in flight.
let file = null, picture = null, grid = null, pinned = null;
let picked = 0, asked = 0, pending = null;

function draw(map) {
  const canvas = $("view"), ctx = canvas.getContext("2d");
  if (!picture || !picture.naturalWidth) return;  // Not loaded (yet).
  const width = picture.naturalWidth, height = picture.naturalHeight;
  // 320 to 512 px on the longer side: small images scaled up, large ones
  // down, the aspect kept.
  const side = Math.max(width, height);
  const scale = Math.min(512 / side, Math.max(320 / side, 1));
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
  if (!map || !grid) return;
  // The [h, w] map as a small dark mask, stretched smoothly over the image.
  const [h, w] = grid, top = Math.max(...map);
  const mask = document.createElement("canvas");
  mask.width = w; mask.height = h;
  const pixels = mask.getContext("2d").createImageData(w, h);
  map.forEach((a, i) => { pixels.data[4 * i + 3] = 200 * (1 - a / top); });
  mask.getContext("2d").putImageData(pixels, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(mask, 0, 0, canvas.width, canvas.height);
}

// A click or tap on a word keeps its map drawn; another click takes it off.
function pin(span, map) {
  if (pinned) pinned.span.classList.remove("on");
  pinned = pinned && pinned.span === span ? null : {span, map};
  if (pinned) span.classList.add("on");
  draw(pinned && pinned.map);
}

function percent(p) {
  const v = 100 * p;
  return (v >= 0.1 ? v.toFixed(1) : v.toPrecision(2)) + "%";
}

function show(captions) {
  const list = $("results");
  list.replaceChildren();
  for (const option of captions) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.className = "caption";
    option.words.forEach((word, t) => {
      const span = document.createElement("span");
      span.className = "word";
      span.textContent = word;
      if (option.attention && grid) {
        const map = option.attention[t];
        span.tabIndex = 0;
        span.onmouseenter = span.onfocus = () => draw(map);
        span.onmouseleave = span.onblur = () => draw(pinned && pinned.map);
        span.onclick = () => pin(span, map);
        span.onkeydown = (e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            pin(span, map);
          }
        };
      }
      text.append(span, " ");
    });
    item.append(text);
    if (!option.words.length) {  // The model ended at once.
      const empty = document.createElement("em");
      empty.className = "empty";
      empty.textContent = "(no words)";
      item.append(empty);
    }
    // The caption's probability under the model, and its log.
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = "p = " + percent(Math.exp(option.log_prob)) +
        ", log p = " + option.log_prob.toFixed(3);
    item.append(score);
    list.append(item);
  }
}

// Captions the current image with the controls' search sizes (empty: the
// export's); only the last request asked for is shown.
async function run() {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  let key = picked;
  for (const name of ["beam_size", "k"]) {
    const value = $(name).value.trim();
    if (value) form.append(name, value);
    key += "&" + name + "=" + value;
  }
  if (key === pending) return;  // In flight already (Enter: change, submit).
  const ticket = ++asked;
  pending = key;
  pinned = null;
  draw(null);
  $("error").textContent = $("time").textContent = "";
  $("results").replaceChildren();
  $("status").textContent = "captioning " + file.name + "...";
  const started = performance.now();
  try {
    const response = await fetch("/api/caption", {method: "POST", body: form});
    const answer = await response.json();
    if (ticket !== asked) return;  // A later request replaced this one.
    const took = performance.now() - started;
    if (!response.ok) throw new Error(answer.error || response.statusText);
    grid = answer.grid;
    show(answer.captions);
    $("status").textContent = grid ?
        "Point at or tap a word to see where the model looked." : "";
    $("time").textContent = "Answered in " + Math.round(took) + " ms" +
        (typeof answer.time_ms === "number" ?
         " (" + answer.time_ms.toFixed(1) + " ms on the server)" : "") + ".";
  } catch (e) {
    if (ticket !== asked) return;
    $("status").textContent = "";
    $("error").textContent = "Error: " + e.message;
  } finally {
    if (ticket === asked) pending = null;
  }
}

function pick(chosen) {
  file = chosen;
  picked++;
  const canvas = $("view");
  canvas.width = canvas.height = 0;
  if (picture) URL.revokeObjectURL(picture.src);
  const loading = picture = new Image();
  loading.onload = () => {
    if (picture === loading) draw(pinned && pinned.map);
  };
  loading.src = URL.createObjectURL(chosen);
  run();
}

$("file").onchange = (e) => e.target.files[0] && pick(e.target.files[0]);
$("beam_size").onchange = $("k").onchange = run;
$("search").onsubmit = (e) => { e.preventDefault(); run(); };
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) pick(e.dataTransfer.files[0]);
};
</script></body></html>
"""


def define_flags():
  flags.DEFINE_string("export", "exports/demo", "SavedModel folder written "
                      "by im2txt-export.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
  flags.DEFINE_integer("port", 8000, "Port (0: any free one).")
  flags.DEFINE_integer("max_upload_mb", 10, "Largest upload, MB.")
  flags.DEFINE_float("max_megapixels", 40, "Largest image, megapixels "
                     "(checked from the header, before decoding).")
  flags.DEFINE_integer("threads", 32, "Request threads of the WSGI server "
                       "(waitress); at least --max_batch.", lower_bound=1)
  flags.DEFINE_integer("max_batch", 16, "Most images captioned in one call "
                       "of the model (dynamic batching); 1 or 0: each "
                       "request alone.", lower_bound=0)
  flags.DEFINE_float("batch_timeout_ms", 10, "Longest wait for more "
                     "requests after the first of a batch, ms.",
                     lower_bound=0)


def main(argv):
  del argv
  model = Model(FLAGS.export, FLAGS.max_batch, FLAGS.batch_timeout_ms)
  server = make_server(model, FLAGS.host, FLAGS.port, FLAGS.threads,
                       max_upload_bytes=FLAGS.max_upload_mb * 2**20,
                       max_pixels=int(FLAGS.max_megapixels * 1e6))
  # waitress's run() returns on SystemExit: SIGTERM stops it as Ctrl-C does.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
  print(f"serving {FLAGS.export} on "
        f"http://{FLAGS.host}:{server.effective_port}/ (waitress, "
        f"{FLAGS.threads} threads, batches of up to "
        f"{max(FLAGS.max_batch, 1)})", flush=True)
  try:
    server.run()
  finally:
    model.close()


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
