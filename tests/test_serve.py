"""The demo web app over an export: the JSON API, its limits, concurrent
requests on the waitress server with and without dynamic batching, the
server command, and the page in headless Chromium."""

import concurrent.futures
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

from conftest import REPO
from im2txt_ext import batching, serve
from test_export import image_paths, png_header
from test_export import soft_attention_export  # noqa: F401 (a fixture)

TOP_K = 2


@pytest.fixture(scope="module")
def export_dir(soft_attention_export):
  """A tiny soft-attention model's export (beam 2, 8 words, TOP_K
  captions)."""
  return str(soft_attention_export[1])


@pytest.fixture(scope="module")
def model(export_dir):
  """The export loaded as the server loads it, each request alone."""
  return serve.Model(export_dir)


@pytest.fixture(scope="module")
def batched(export_dir):
  """The export with dynamic batching: up to 8 images a call, waiting up
  to half a second for them."""
  model = serve.Model(export_dir, max_batch=8, batch_timeout_ms=500)
  yield model
  model.close()


@pytest.fixture(scope="module")
def client(model):
  return serve.create_app(model, max_upload_bytes=200_000,
                          max_pixels=1_000_000).test_client()


def serving(model):
  """Base URL of a waitress server on a free port of 127.0.0.1."""
  httpd = serve.make_server(model, "127.0.0.1", 0)
  thread = threading.Thread(target=httpd.run, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.effective_port}"
  httpd.close()
  thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(model):
  yield from serving(model)


@pytest.fixture(scope="module")
def batched_server(batched):
  yield from serving(batched)


def read(path):
  with open(path, "rb") as f:
    return f.read()


def post(url, data, query="", timeout=60):
  """(status, JSON answer) of POST /api/caption with the raw bytes."""
  request = urllib.request.Request(url + "/api/caption" + query, data=data,
                                   method="POST")
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      return response.status, json.load(response)
  except urllib.error.HTTPError as e:
    return e.code, json.load(e)


def captions(answer):
  return [option["caption"] for option in answer["captions"]]


def untimed(answer):
  """The answer without its time_ms, which differs from call to call."""
  return {name: value for name, value in answer.items()
          if name != "time_ms"}


def test_api_multipart_and_raw_bytes(client, scene_data):
  data = read(image_paths(scene_data, 1)[0])
  multipart = client.post("/api/caption", data={"image": (
      io.BytesIO(data), "scene.png")})
  raw = client.post("/api/caption", data=data,
                    content_type="application/octet-stream")
  assert multipart.status_code == raw.status_code == 200, raw.json
  # The server's time for the request, beside what older servers answered.
  times = [response.json["time_ms"] for response in (multipart, raw)]
  assert all(isinstance(t, float) and t > 0 for t in times), times
  assert multipart.json.keys() == {"captions", "grid", "time_ms"}
  assert untimed(multipart.json) == untimed(raw.json)
  answer = untimed(raw.json)
  assert answer["grid"] == [4, 4]  # 32 px through scene_cnn: 4x4 locations.
  assert len(answer["captions"]) == TOP_K
  for option in answer["captions"]:
    assert option["caption"] == " ".join(option["words"])
    assert isinstance(option["log_prob"], float)
    assert len(option["attention"]) == len(option["words"])
    assert all(len(weights) == 16 for weights in option["attention"])
  options = client.post("/api/caption?beam_size=3&max_length=5&k=3",
                        data=data)
  assert options.status_code == 200 and len(options.json["captions"]) == 3
  # One option alone: the export's default sizes for the others.
  defaults = client.post("/api/caption?beam_size=2", data=data)
  assert untimed(defaults.json) == answer
  # A beam narrower than the export's k: as many captions as beams.
  narrow = client.post("/api/caption?beam_size=1", data=data)
  assert narrow.status_code == 200, narrow.json
  assert len(narrow.json["captions"]) == 1
  rules = client.post("/api/caption?no_repeat_ngram_size=1&min_length=3"
                      "&no_bad_endings=1&length_penalty=0.5"
                      "&diversity_groups=2&diversity_strength=1", data=data)
  assert rules.status_code == 200, rules.json
  for option in rules.json["captions"]:
    assert len(option["words"]) >= 3
    assert len(set(option["words"])) == len(option["words"])
  assert rules.json["captions"][0] != rules.json["captions"][1]


def test_api_refuses_bad_uploads(client, scene_data):
  data = read(image_paths(scene_data, 1)[0])
  cases = [
      (b"", 400, "no image in the request"),
      (b"GIF89a" + b"\0" * 20, 415, "only JPEG and PNG"),
      (b"hello", 415, "only JPEG and PNG"),
      (b"\x89PNG\r\n\x1a\n garbage", 400, "not a readable JPEG/PNG"),
      (png_header(5000, 5000), 413, "5000x5000 pixels, more than the 1 "
       "megapixels allowed"),
      (data + b"\0" * 300_000, 413, "upload larger than"),
      (data[:len(data) // 2], 400, "cannot decode the image: "),  # Cut.
  ]
  for body, status, message in cases:
    response = client.post("/api/caption", data=body)
    assert response.status_code == status, (message, response.json)
    assert message in response.json["error"]
  for query, message in [("?beam_size=x&max_length=5&k=1",
                          "beam_size must be an integer, got 'x'"),
                         ("?repetition_penalty=high",
                          "repetition_penalty must be a number"),
                         ("?no_bad_endings=maybe",
                          "no_bad_endings must be 0 or 1"),
                         ("?min_length=-1", "min length must be >= 0"),
                         ("?diversity_groups=3",
                          "multiple of the diversity groups (3)"),
                         ("?beam_size=5000&max_length=5&k=1",
                          "up to 20, the words the search may emit")]:
    response = client.post("/api/caption" + query, data=data)
    assert response.status_code == 400 and message in response.json["error"]
  # The API's name of the option, not the Python API's top_k.
  response = client.post("/api/caption?beam_size=2&k=3", data=data)
  assert response.status_code == 400
  assert response.json["error"] == "k must be in 1..2, got 3"


def test_concurrent_requests(server, scene_data):
  paths = image_paths(scene_data, 4)

  def caption(path):
    return captions(post(server, read(path))[1])[0]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(caption, paths * 3, timeout=120))
  assert answers == [caption(p) for p in paths] * 3
  assert post(server, b"hello")[0] == 415


def test_health_404_405_and_request_log(client, export_dir, caplog):
  with caplog.at_level("INFO", logger="im2txt_ext.serve"):
    health = client.get("/healthz")
    missing = client.get("/nope")
    wrong = client.get("/api/caption")
  assert health.status_code == 200
  assert health.json == {"status": "ok", "export": export_dir,
                         "batching": None}
  assert missing.status_code == 404
  assert missing.json == {"error": "Not Found: GET /nope"}
  assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
  assert wrong.json["error"].startswith(
      "Method Not Allowed: GET /api/caption (allowed: ")
  lines = [record.getMessage() for record in caplog.records]
  assert [line.rsplit(" ", 2)[0] for line in lines] == [
      "GET /healthz 200", "GET /nope 404", "GET /api/caption 405"]
  assert all(re.fullmatch(r".* \d+\.\d ms", line) for line in lines)


def test_batcher_groups_by_key_and_retries_a_failed_batch_alone():
  calls = []

  def run_batch(key, items):
    calls.append((key, items))
    if "bad" in items:
      raise ValueError("bad item")
    return [f"{key}{item}" for item in items]
  batcher = batching.Batcher(run_batch, max_batch=3, timeout_s=60)
  futures = [batcher.submit(key, item) for key, item in [
      ("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5), ("b", "bad")]]
  batcher.close()  # Runs what waits, without waiting for more.
  assert calls == [("a", [1, 3, 4]), ("b", [2, "bad"]), ("b", [2]),
                   ("b", ["bad"]), ("a", [5])]
  assert [f.result() for f in futures[:5]] == ["a1", "b2", "a3", "a4", "a5"]
  with pytest.raises(ValueError, match="bad item"):
    futures[5].result()
  with pytest.raises(RuntimeError, match="closed"):
    batcher.submit("a", 6)
  batcher = batching.Batcher(run_batch, max_batch=8, timeout_s=0.05)
  assert batcher.submit("c", 7).result(timeout=10) == "c7"  # Not full.
  batcher.close()


def test_batching_gives_each_request_its_captions(
    batched_server, batched, server, scene_data, monkeypatch):
  """16 requests from 8 clients, 8 images with two kinds of options: each
  gets what its image and options get alone, from fewer calls, each call
  with one kind of options."""
  images = [read(path) for path in image_paths(scene_data, 8)]
  requests = [(data, query) for data in images
              for query in ("", "?beam_size=3&max_length=6&k=1")]
  alone = [post(server, *request)[1] for request in requests]
  calls, before = [], batched.health()["batching"]["batches"]

  def counting(signature):
    def counted(**inputs):
      calls.append((signature, len(inputs["images"])))
      return signature(**inputs)
    return counted
  for name in ("_default", "_options"):
    monkeypatch.setattr(batched, name, counting(getattr(batched, name)))
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(lambda request: post(batched_server, *request),
                            requests, timeout=120))
  for (status, answer), expected in zip(answers, alone):
    assert status == 200, answer
    assert captions(answer) == captions(expected)
    assert [o["log_prob"] for o in answer["captions"]] == pytest.approx(
        [o["log_prob"] for o in expected["captions"]], abs=1e-3)
  assert len(calls) < len(requests) and max(n for _, n in calls) > 1
  for signature in {signature for signature, _ in calls}:
    assert sum(n for s, n in calls if s is signature) == len(images)
  health = json.load(urllib.request.urlopen(batched_server + "/healthz",
                                            timeout=60))
  assert health["batching"]["max_batch"] == 8
  assert health["batching"]["batches"] - before == len(calls)


def test_a_bad_image_fails_only_its_own_request(batched_server, batched,
                                                server, scene_data):
  images = [read(path) for path in image_paths(scene_data, 7)]
  cut = images[0][:len(images[0]) // 2]  # Passes the header checks.
  alone = [post(server, data)[1] for data in images]
  before = batched.health()["batching"]["images"]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(lambda data: post(batched_server, data),
                            images + [cut], timeout=120))
  for (status, answer), expected in zip(answers, alone):
    assert status == 200 and captions(answer) == captions(expected)
  status, answer = answers[-1]
  assert status == 400 and "cannot decode the image: " in answer["error"]
  # The failed batch's images were run again, one at a time.
  assert batched.health()["batching"]["images"] - before > len(answers)


def test_server_command_runs_on_waitress(export_dir, scene_data):
  """im2txt-serve: health check, one caption, its log line, SIGTERM."""
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  process = subprocess.Popen(
      [sys.executable, "-m", "im2txt_ext.serve", f"--export={export_dir}",
       "--port=0", "--max_batch=4", "--batch_timeout_ms=5"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
      cwd=str(REPO))
  try:
    line = process.stdout.readline()  # "serving ... on http://HOST:PORT/"
    url = re.search(r"http://[\d.]+:\d+", line)
    assert url, line + process.stderr.read()
    url = url.group()
    with urllib.request.urlopen(url + "/healthz", timeout=60) as response:
      assert response.headers["Server"] == "waitress"
      assert json.load(response)["batching"]["max_batch"] == 4
    status, answer = post(url, read(image_paths(scene_data, 1)[0]))
    assert status == 200 and len(answer["captions"]) == TOP_K
  finally:
    process.terminate()
    _, log = process.communicate(timeout=60)
  assert process.returncode == 0, log
  assert re.search(r"POST /api/caption 200 \d+\.\d ms", log), log


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser():
  """Headless Debian Chromium driven by Selenium, with a fresh profile."""
  webdriver = pytest.importorskip(
      "selenium.webdriver", reason="selenium is not installed "
      "(pip install selenium)")
  if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip("needs Debian's chromium and chromium-driver: apt-get "
                "install -y chromium chromium-driver")
  from selenium.webdriver.chrome.service import Service
  profile = tempfile.mkdtemp(prefix="chromium-profile-")
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless", "--no-sandbox", "--disable-gpu",
               "--disable-quic", "--no-first-run",
               "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  driver.set_page_load_timeout(60)
  yield driver
  driver.quit()
  shutil.rmtree(profile, ignore_errors=True)


def shown_captions(browser, count):
  """(caption, p %, log p) of each caption the page shows, once it shows
  ``count`` of them."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  items = WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(
      By.CSS_SELECTOR, "#results li")) == count and d.find_elements(
          By.CSS_SELECTOR, "#results li"))
  shown = []
  for item in items:
    score = re.fullmatch(r"p = ([\d.e+-]+)%, log p = (-?\d+\.\d{3})",
                         item.find_element(By.CLASS_NAME, "score").text)
    assert score, item.text
    shown.append((item.find_element(By.CLASS_NAME, "caption").text.strip(),
                  float(score[1]), float(score[2])))
  return shown


def assert_shows(browser, expected):
  """The page shows the API's captions, each with p = exp(log p) as a
  percentage (one decimal, or 2 significant digits under 0.1%) and log p."""
  shown = shown_captions(browser, len(expected))
  assert [caption for caption, _, _ in shown] == [
      option["caption"] for option in expected]
  for (_, percent, log_p), option in zip(shown, expected):
    assert log_p == pytest.approx(option["log_prob"], abs=5.01e-4)
    p = 100 * math.exp(option["log_prob"])
    assert percent == pytest.approx(p, abs=0.0501 if p >= 0.1 else p / 20)


def test_page_in_headless_chromium(browser, server, scene_data, tmp_path):
  """The page over the attention model: a 32-px image shown at 320 px, the
  API's captions with their probabilities, the request's time, one word's
  map drawn on hover and kept by a click, the search controls sent with
  the request, the API's errors shown."""
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import WebDriverWait
  path = image_paths(scene_data, 1)[0]
  data = read(path)
  expected = {query: post(server, data, query)[1]["captions"] for query in
              ("", "?beam_size=3&k=3", "?beam_size=3&k=1")}
  wait = WebDriverWait(browser, 60)
  script = browser.execute_script

  browser.get(server + "/")
  # The controls start at the export's sizes (beam 2, TOP_K captions).
  assert browser.find_element(By.ID, "beam_size").get_attribute(
      "value") == "2"
  assert browser.find_element(By.ID, "k").get_attribute("value") == \
      str(TOP_K)
  browser.find_element(By.ID, "file").send_keys(path)
  assert_shows(browser, expected[""])
  assert browser.find_element(By.ID, "error").text == ""
  assert re.fullmatch(r"Answered in \d+ ms \(\d+\.\d ms on the server\)\.",
                      browser.find_element(By.ID, "time").text)
  # At least 320 px on the longer side, the aspect kept (32x32 here).
  size = wait.until(lambda d: script(
      "const c = document.getElementById('view');"
      "return c.width && [c.width, c.height];"))
  assert size == [320, 320]
  pixels = "return document.getElementById('view').toDataURL();"
  plain = script(pixels)

  # Hover over a word: its attention map is drawn over the image; leaving
  # the word takes it off; a click (a tap) keeps it until the next click.
  word = browser.find_elements(By.CSS_SELECTOR, "#results .word")[0]
  heading = browser.find_element(By.TAG_NAME, "h1")
  ActionChains(browser).move_to_element(word).perform()
  hovered = script(pixels)
  assert hovered != plain
  ActionChains(browser).move_to_element(heading).perform()
  assert script(pixels) == plain
  ActionChains(browser).click(word).move_to_element(heading).perform()
  assert script(pixels) == hovered and "on" in word.get_attribute("class")
  ActionChains(browser).click(word).perform()
  assert script(pixels) == plain and "on" not in word.get_attribute("class")

  def ask(beam_size, k):
    for name, value in (("beam_size", beam_size), ("k", k)):
      field = browser.find_element(By.ID, name)
      field.clear()
      field.send_keys(str(value))
    field.send_keys(Keys.ENTER)
  ask(3, 3)
  assert_shows(browser, expected["?beam_size=3&k=3"])
  ask(3, 1)
  assert_shows(browser, expected["?beam_size=3&k=1"])
  assert browser.find_element(By.ID, "time").text.startswith("Answered in ")
  ask(2, 3)  # More captions than beams: the API's error.
  error = wait.until(lambda d: d.find_element(By.ID, "error").text)
  assert error == "Error: k must be in 1..2, got 3"  # The API's name.
  assert not browser.find_elements(By.CSS_SELECTOR, "#results li")

  not_image = tmp_path / "notes.png"
  not_image.write_text("not an image")
  browser.find_element(By.ID, "file").send_keys(str(not_image))
  error = wait.until(lambda d: "PNG" in d.find_element(By.ID, "error").text
                     and d.find_element(By.ID, "error").text)
  assert "only JPEG and PNG images are accepted" in error
