"""Denormal floats are off: they only slow CPU math down and change no label."""

import numpy as np
import torch

from training.core.cpu_math import SMALLEST_NORMAL, flush_denormals, zero_denormal_weights
from training.engine.checkpoint import load_checkpoint, save_checkpoint
from training.engine.networks import UNet


def test_tiny_weights_become_zero_when_a_model_is_loaded(tmp_path):
    torch.manual_seed(0)
    net = UNet(2, 1, 2, base=4, depth=2)
    with torch.no_grad():
        w = net.seg.weight
        w.view(-1)[:3] = torch.tensor([1e-40, -3e-39, 2e-45])  # what long training leaves
    normal = w.view(-1)[3:].clone()
    path = save_checkpoint(tmp_path / "m.pt", net, {"num_classes": 2, "dims": 2,
                                                     "size": [16, 16]})
    stored = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert (stored["seg.weight"].abs() < SMALLEST_NORMAL).sum() >= 3  # the file keeps them
    model, _ = load_checkpoint(path)
    loaded = model.seg.weight.view(-1)
    assert (loaded[:3] == 0).all()
    assert torch.equal(loaded[3:], normal)  # every other weight as trained
    assert zero_denormal_weights(model) == 0  # nothing left


def test_cpu_math_treats_denormals_as_zero():
    if not flush_denormals():  # a CPU without flush-to-zero: nothing to check
        return
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert (tiny * 1.0).item() == 0.0
    x = torch.randn(1, 1, 16, 16)
    net = UNet(2, 1, 2, base=4, depth=2).eval()
    with torch.no_grad():
        a = net(x)["logits"]
        zero_denormal_weights(net)
        b = net(x)["logits"]
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_bf16_counts_as_fast_only_with_amx_or_avx512_bf16(monkeypatch):
    import torch

    from training.core.cpu_math import cpu_has_fast_bf16

    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert cpu_has_fast_bf16() is False  # a failing probe is a "no", never an error
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_has_fast_bf16() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert cpu_has_fast_bf16() is True
