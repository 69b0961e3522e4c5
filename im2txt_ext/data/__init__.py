"""Data layer: caption readers, tokenisation, vocabulary, TFRecords, tf.data."""
