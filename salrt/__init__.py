"""salrt: gradient saliency maps as deployable graphs (TorchScript, ONNX, AOTInductor) and a fast runtime."""
from ._version import __version__
from .errors import SalrtError
from .export import export
from .runtime import Explainer, Explanation, load

__all__ = ["__version__", "SalrtError", "export", "load", "Explainer", "Explanation"]
