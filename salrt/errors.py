"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class SalrtError(Exception):
    """A problem with the user's input (model name, weights, image, artifact), explained in its message."""
