"""Word embeddings shared by every decoder: a skip-gram word2vec trainer and
pretrained-vector loading.

``skipgram_pairs`` makes the training pairs (tf.data), ``word2vec`` trains the
vectors, ``vectors`` reads and writes vector files and builds a decoder's
embedding matrix, ``cli`` holds the ``im2txt-word2vec`` and
``im2txt-neighbours`` commands.

Note: PyPI has an unrelated distribution named ``embeddings`` that installs a
top-level package of the same name. This package is installed from this
repository (with ``im2txt_ext``); do not install both in one environment.
"""
