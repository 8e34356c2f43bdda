"""Explaining many images: which files (``inputs``), loading them ahead of the model (``loading``), files
written whole (``outputs``), what is done (``journal``), the index (``index``) and the gallery (``gallery``)."""

SAVE_CHOICES = ("png", "npy", "grad", "index")  # what `salrt explain --save` may write
DEFAULT_SAVE = ("png", "index")
ON_ERROR = ("fail", "continue")                 # what an unreadable input does to a run
RAY_AUTO = "local"  # `--ray` without an address: $RAY_ADDRESS's cluster (`ray job submit` sets it), else a Ray
#                     instance on this machine, started for the run and stopped after it
