"""make demo: its suite is valid and compares a decoder without attention
with one with it; the driver prints a few captions of each and the attention
figure after the table. (test_compare runs the driver end to end.)"""

import json

from conftest import REPO

DEMO_SUITE = REPO / "experiments" / "suites" / "demo.json"


def test_demo_suite_compares_no_attention_with_attention(monkeypatch):
  from experiments.suite import Suite
  from im2txt_ext.config import ExperimentConfig, apply_overrides
  from im2txt_ext.models import decoder_class
  monkeypatch.chdir(REPO)  # The suite names its configs from the root.
  suite = Suite.load(str(DEMO_SUITE))
  attention = []
  for experiment in suite.experiments:
    config = apply_overrides(ExperimentConfig.load(experiment.config),
                             experiment.set)
    attention.append(decoder_class(config.model.decoder).has_attention)
  assert set(attention) == {False, True}
  assert suite.show_captions > 0 and suite.attention_images > 0


def test_caption_samples_print_each_model_and_the_figures(tmp_path):
  from experiments import report
  from experiments.suite import Experiment, Suite
  from im2txt_ext.data.records import CaptionRecord
  suite = Suite(show_captions=2, experiments=[
      Experiment(name="st", label="Show and Tell"),
      Experiment(name="soft", label="Soft attention")])
  records = [CaptionRecord(str(i), f"images/scene_{i}.png",
                           [f"reference {i}", "another"]) for i in range(3)]
  runs = {}
  for name in ("st", "soft"):
    (tmp_path / name / "test").mkdir(parents=True)
    (tmp_path / name / "test" / "captions.json").write_text(json.dumps([
        {"image_id": r.image_id, "generated": f"{name} says {r.image_id}"}
        for r in records]))
    runs[name] = [{"test_dir": str(tmp_path / name / "test")}]
  figures = {("soft", "0"): "attention/soft_0.png"}
  text = report.caption_samples(suite, runs, {"0": "r0", "1": "r1", "2": "r2"},
                                records, figures)
  assert text.splitlines() == [
      "scene_0.png (a reference: 'reference 0')",
      "  Show and Tell:      'st says 0'",
      "  Soft attention:     'soft says 0'",
      "  retrieval baseline: 'r0'",
      "  where Soft attention looked: attention/soft_0.png",
      "scene_1.png (a reference: 'reference 1')",
      "  Show and Tell:      'st says 1'",
      "  Soft attention:     'soft says 1'",
      "  retrieval baseline: 'r1'"]
