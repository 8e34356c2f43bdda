"""salrt: gradient saliency maps as deployable graphs (TorchScript, ONNX, AOTInductor) and a fast runtime.

The package reads as the pipeline: ``models`` -> ``graph`` (trace, passes, decompositions) -> ``formats``
(one module per format, one registry) -> ``artifact`` (directory, manifest, atomic write) -> ``runtime``
(``Explainer``) -> surfaces (``cli``, ``explain``, ``bench``, ``demo``).
"""
from ._version import __version__
from .artifact import export
from .errors import ArtifactError, ExportError, InputError, SalrtError
from .graph import Method
from .runtime import Explainer, Explanation, load

__all__ = ["__version__", "ArtifactError", "ExportError", "Explainer", "Explanation", "InputError", "Method",
           "SalrtError", "export", "load"]
