"""``salrt serve``: an artifact on Triton Inference Server, and the client behind ``salrt explain --server``."""
from .process import ServeOptions, TritonServer, free_ports, serve
from .repository import IMAGE, TENSOR, model_names

__all__ = ["IMAGE", "ServeOptions", "TENSOR", "TritonServer", "free_ports", "model_names", "serve"]
