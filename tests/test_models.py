import urllib.error

import pytest
import torch

from salrt.errors import SalrtError
from salrt.models import load_model


def test_pretrained_lite0_recognises_photos(lite0, photos):
    import salrt
    explainer = salrt.load("efficientnet_lite0")
    top = explainer.explain([photos["chelsea"], photos["coffee"]]).top(1)
    assert top[0][0][1] in {"tiger cat", "Egyptian cat", "tabby", "Persian cat", "Siamese cat"}
    assert top[1][0][1] == "espresso"


def test_random_weights_are_reproducible():
    a, b = load_model("resnet18", "random").module, load_model("resnet18", "random").module
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_state_dict_path(tmp_path):
    source = load_model("resnet18", "random").module
    with torch.no_grad():
        source.fc.bias.fill_(0.5)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    loaded = load_model("resnet18", str(tmp_path / "weights.pt"))
    assert torch.equal(loaded.module.fc.bias, source.fc.bias)
    assert not any(p.requires_grad for p in loaded.module.parameters())


def test_wrong_state_dict_is_a_clear_error(tmp_path):
    torch.save(load_model("resnet18", "random").module.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(SalrtError, match="not a state dict for mobilenet_v3_small"):
        load_model("mobilenet_v3_small", str(tmp_path / "r18.pt"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SalrtError, match="not a state dict"):
        load_model("resnet18", str(tmp_path / "junk.pt"))


def test_offline_default_weights_name_the_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-hub")
    with pytest.raises(SalrtError, match="--weights random"):
        load_model("resnet18", "default")


def test_unknown_model_lists_choices():
    with pytest.raises(SalrtError, match="unknown model 'resnet51'.*resnet50"):
        load_model("resnet51")
