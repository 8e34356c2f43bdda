"""Explaining many images: which files (``inputs``), loading them ahead of the model (``loading``), files
written whole (``outputs``), what is done (``journal``), the index (``index``) and the gallery (``gallery``)."""
