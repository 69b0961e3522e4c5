"""Word embeddings shared by every decoder: a skip-gram word2vec trainer.

``skipgram_pairs`` makes the training pairs (tf.data), ``word2vec`` trains the
vectors, ``cli`` holds the ``im2txt-word2vec`` and ``im2txt-neighbours``
commands. Vector files are read and written, and a decoder's embedding
matrix built from them, by the core's ``im2txt_ext.data.vectors`` (a
config's ``model.embeddings_init``).

Note: PyPI has an unrelated distribution named ``embeddings`` that installs a
top-level package of the same name. This package is installed from this
repository (with ``im2txt_ext``); do not install both in one environment.
"""
