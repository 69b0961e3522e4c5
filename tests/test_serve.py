"""The demo web app over an export: the JSON API, its limits, concurrent
requests on a real threaded server, and the page in headless Chromium."""

import concurrent.futures
import io
import json
import shutil
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

from im2txt_ext import export, serve
from test_export import image_paths, png_header, train_tiny

TOP_K = 2


@pytest.fixture(scope="module")
def model(scene_data, tmp_path_factory):
  """A tiny soft-attention model's export, loaded as the server loads it."""
  folder = tmp_path_factory.mktemp("serve")
  run_dir = train_tiny(scene_data, folder / "run", "soft_attention")
  export.export(str(run_dir), str(folder / "model"), beam_size=2,
                max_length=8, top_k=TOP_K)
  return serve.Model(str(folder / "model"))


@pytest.fixture(scope="module")
def client(model):
  return serve.create_app(model, max_upload_bytes=200_000,
                          max_pixels=1_000_000).test_client()


@pytest.fixture(scope="module")
def server(model):
  """Base URL of a threaded server on a free port of 127.0.0.1."""
  httpd = serve.make_server(model, "127.0.0.1", 0)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_port}"
  httpd.shutdown()
  thread.join(timeout=10)


def read(path):
  with open(path, "rb") as f:
    return f.read()


def test_api_multipart_and_raw_bytes(client, scene_data):
  data = read(image_paths(scene_data, 1)[0])
  multipart = client.post("/api/caption", data={"image": (
      io.BytesIO(data), "scene.png")})
  raw = client.post("/api/caption", data=data,
                    content_type="application/octet-stream")
  assert multipart.status_code == raw.status_code == 200, raw.json
  assert multipart.json == raw.json
  answer = raw.json
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
  assert defaults.json == answer
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
  for query, message in [("?beam_size=2&k=3", "top_k must be in 1..2, got 3"),
                         ("?beam_size=x&max_length=5&k=1",
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


def test_concurrent_requests(server, scene_data):
  paths = image_paths(scene_data, 4)

  def caption(path):
    request = urllib.request.Request(server + "/api/caption",
                                     data=read(path), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
      return json.load(response)["captions"][0]["caption"]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(caption, paths * 3, timeout=120))
  assert answers == [caption(p) for p in paths] * 3
  with pytest.raises(urllib.error.HTTPError) as error:
    urllib.request.urlopen(urllib.request.Request(
        server + "/api/caption", data=b"hello", method="POST"), timeout=60)
  assert error.value.code == 415


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


def test_page_in_headless_chromium(browser, server, scene_data, tmp_path):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  path = image_paths(scene_data, 1)[0]
  with urllib.request.urlopen(urllib.request.Request(
      server + "/api/caption", data=read(path), method="POST"),
      timeout=60) as response:
    expected = json.load(response)["captions"]

  browser.get(server + "/")
  browser.find_element(By.ID, "file").send_keys(path)
  wait = WebDriverWait(browser, 60)
  items = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR,
                                               "#results li"))
  captions = [item.find_element(By.CLASS_NAME, "caption").text.strip()
              for item in items]
  assert captions == [option["caption"] for option in expected]
  assert items[0].find_element(By.CLASS_NAME, "score").text == \
      f"log p = {expected[0]['log_prob']:.3f}"
  assert browser.find_element(By.ID, "error").text == ""
  words = browser.find_elements(By.CSS_SELECTOR, "#results .word")
  if words:  # Pointing at a word draws its attention map over the image.
    ActionChains(browser).move_to_element(words[0]).perform()
  assert browser.execute_script(
      "return document.getElementById('view').width") > 0

  not_image = tmp_path / "notes.png"
  not_image.write_text("not an image")
  browser.find_element(By.ID, "file").send_keys(str(not_image))
  error = wait.until(lambda d: d.find_element(By.ID, "error").text)
  assert "only JPEG and PNG images are accepted" in error
