"""Independent references for the gradient family: Captum in float64, and the small methods and models the
checks use. Shared by tests/test_methods.py and benchmarks/verify_methods.py (which runs the same check on
every format, AOTInductor included, too slow for every CI run)."""
import copy
from unittest import mock

import torch
import torchvision
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

from salrt.graph import Method
from salrt.graph.methods import baseline_image, smoothgrad_noise

SIZE = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SMALL = {  # small parameters, so that each export stays a few seconds; chunks smaller than the counts
    "saliency": Method(),
    "input_x_gradient": Method("input_x_gradient"),
    "smoothgrad": Method("smoothgrad", samples=5, seed=3, chunk=2),
    "smoothgrad_sq": Method("smoothgrad_sq", samples=5, seed=3, chunk=2),
    "vargrad": Method("vargrad", samples=5, seed=3, chunk=2),
    "integrated_gradients": Method("integrated_gradients", steps=6, baseline="black", chunk=4),
}


def tiny_vit() -> torch.nn.Module:
    """torchvision's VisionTransformer at a size CI can afford: a transformer with attention and LayerNorm."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=SIZE, patch_size=16, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64)
    torch.nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: no gradient at all
    return model.eval()


def captum_reference(method: Method, model: torch.nn.Module, image: torch.Tensor, target: torch.Tensor):
    """The method's attribution by Captum, in float64; the smoothgrad family gets salrt's noise tensors."""
    model64, x = copy.deepcopy(model).double(), image.double()
    if method.name == "integrated_gradients":
        baseline = baseline_image(method.baseline, MEAN, STD).double().expand_as(x)
        return IntegratedGradients(model64).attribute(x, baselines=baseline, target=target, n_steps=method.steps,
                                                      method=method.ig_method, return_convergence_delta=True)
    if method.name == "input_x_gradient":
        return InputXGradient(model64).attribute(x, target=target), None
    if method.name == "saliency":
        return Saliency(model64).attribute(x, target=target, abs=False), None
    noise = smoothgrad_noise(method.seed, method.samples, x.shape[1:]).double()
    rows = []
    for i in range(len(x)):  # Captum takes one std per call: the noise scale is per image here
        sigma = method.noise * float(x[i].max() - x[i].min())
        with mock.patch("captum.attr._core.noise_tunnel.torch.normal", lambda mean, std: std * noise):
            rows.append(NoiseTunnel(Saliency(model64)).attribute(
                x[i:i + 1], nt_type=method.name, nt_samples=method.samples, stdevs=sigma, target=int(target[i]),
                abs=False))
    return torch.cat(rows), None


