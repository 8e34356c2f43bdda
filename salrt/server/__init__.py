"""``salrt serve``: an artifact on Triton Inference Server, and the client behind ``salrt explain --server``."""
from .process import ServeOptions, TritonServer, serve
from .repository import IMAGE, TENSOR, model_names

__all__ = ["IMAGE", "ServeOptions", "TENSOR", "TritonServer", "model_names", "serve"]
