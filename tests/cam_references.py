"""Independent references for the CAM family and guided backprop: pytorch-grad-cam 1.5.7 and Captum, in float64,
with the reshape a user of theirs writes by hand. Shared by tests/test_cams.py and benchmarks/verify_cams.py."""
import copy
from unittest import mock

import numpy as np
import torch

# pytorch-grad-cam's classes by salrt's method names
PGC = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
       "layercam": "LayerCAM", "eigencam": "EigenCAM"}


def tokens_to_grid(prefix: int, grid: tuple):
    """The ``reshape_transform`` pytorch-grad-cam's docs have ViT users write: drop the prefix tokens, lay the
    rest on the patch grid, channels first."""
    def reshape(t):
        return t[:, prefix:, :].reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 3, 1, 2)
    return reshape


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2)


def pytorch_grad_cam(name: str, model: torch.nn.Module, layers: list, image: torch.Tensor, targets,
                     reshape=None) -> np.ndarray:
    """pytorch-grad-cam's map [N,H,W] of ``name`` on ``layers`` (module paths) in float64; ``targets``: class
    indices, or None for the top class. EigenCAM's projection gets the sign rule salrt states (pytorch-grad-cam's
    own SVD sign is whatever LAPACK returns): its ``get_2d_projection_with_sign_correction``."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
    model64 = copy.deepcopy(model).double().requires_grad_(True)  # its hooks need outputs that require grad
    modules = [model64.get_submodule(path) for path in layers]
    cam_class = getattr(pytorch_grad_cam, PGC[name])
    chosen = None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets]
    with mock.patch("pytorch_grad_cam.eigen_cam.get_2d_projection", get_2d_projection_with_sign_correction), \
            torch.enable_grad():
        with cam_class(model=model64, target_layers=modules, reshape_transform=reshape) as cam:
            return cam(input_tensor=image.double(), targets=chosen)


def guided_backprop(model: torch.nn.Module, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Captum's GuidedBackprop attribution [N,C,H,W] in float64."""
    from captum.attr import GuidedBackprop
    return GuidedBackprop(copy.deepcopy(model).double()).attribute(image.double(), target=target)


def layer_gradcam(model: torch.nn.Module, layer: str, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Captum's LayerGradCam at the layer's resolution [N,h,w], ReLU applied (salrt's ``cam`` output)."""
    from captum.attr import LayerGradCam
    model64 = copy.deepcopy(model).double()
    return LayerGradCam(model64, model64.get_submodule(layer)).attribute(
        image.double(), target=target, relu_attributions=True)[:, 0].detach()


def per_image_errors(actual: torch.Tensor, expected) -> list:
    """Each image's relative L2; where the reference is all zeros (a CAM negative everywhere: zeros after its
    ReLU), the largest magnitude of the actual map instead."""
    expected = torch.as_tensor(np.asarray(expected)).double()
    return sorted(float((a.double() - e).norm() / e.norm() if e.norm() > 0 else a.double().abs().max())
                  for a, e in zip(actual, expected))
