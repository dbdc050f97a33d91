import pytest
import torch

from training.engine.networks import (
    UNet,
    build_network,
    count_parameters,
    enable_mc_dropout,
    fold_batch_norm,
    has_batch_norm,
    network_config,
    tiny_student,
)


@pytest.mark.parametrize("dims", [2, 3])
def test_unet_outputs_and_heads(dims):
    net = UNet(dims, 1, 3, base=4, depth=2, sdf_head=True, edge_head=True, cls_head=True)
    shape = (2, 1) + (16,) * dims
    out = net(torch.randn(shape))
    assert out["logits"].shape == (2, 3) + (16,) * dims
    assert out["sdf"].shape == (2, 2) + (16,) * dims
    assert out["sdf"].abs().max() <= 1
    assert out["edge"].shape == (2, 1) + (16,) * dims
    assert out["cls"].shape == (2, 3)
    assert out["features"].shape[1] == 4


def test_heads_absent_by_default():
    out = UNet(2, 1, 2, base=4, depth=1)(torch.randn(1, 1, 8, 8))
    assert set(out) == {"logits"}


def test_instance_norm_is_refused():
    with pytest.raises(ValueError, match="instance"):
        UNet(2, 1, 2, norm="instance")


def test_no_instance_norm_modules():
    net = UNet(3, 1, 2, base=4, depth=2, norm="batch")
    assert not any(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)
                   for m in net.modules())


def test_config_round_trip_rebuilds_same_architecture():
    net = UNet(2, 1, 4, base=4, depth=2, dropout=0.2, edge_head=True)
    cfg = network_config(net)
    clone = build_network(cfg)
    clone.load_state_dict(net.state_dict())  # same parameter names and shapes
    assert network_config(clone) == cfg


def test_mc_dropout_varies_only_when_enabled():
    torch.manual_seed(0)
    net = UNet(2, 1, 2, base=4, depth=2, dropout=0.5).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x)["logits"], net(x)["logits"])
        assert enable_mc_dropout(net) > 0
        a, b = net(x)["logits"], net(x)["logits"]
    assert not torch.equal(a, b)
    enable_mc_dropout(net, False)
    assert not any(m.training for m in net.modules())


def test_tiny_student_is_at_least_50x_smaller_than_default():
    for dims in (2, 3):
        default = UNet(dims, 1, 4)
        student = tiny_student(dims, 1, 4)
        assert count_parameters(default) >= 50 * count_parameters(student)


def test_an_unshuffled_unet_predicts_every_pixel_from_its_block():
    torch.manual_seed(0)
    net = UNet(2, 1, 3, base=8, depth=2, unshuffle=2)
    x = torch.randn(2, 1, 32, 32)
    logits = net(x)["logits"]
    assert logits.shape == (2, 3, 32, 32)  # full resolution out, computed at 16 x 16
    again = build_network(network_config(net))
    again.load_state_dict(net.state_dict())
    assert torch.equal(again(x)["logits"], logits)
    # a change inside one 2 x 2 block of the input changes the logits of that block
    y = x.clone()
    y[0, 0, 10, 10] += 5.0
    diff = (net(y)["logits"] - logits).abs().sum(1)[0]
    assert diff[10:12, 10:12].min() > 0
    for bad in (dict(dims=3), dict(cls_head=True)):
        kw = {"dims": 2, **bad}
        with pytest.raises(ValueError, match="unshuffle"):
            UNet(kw.pop("dims"), 1, 3, base=4, depth=2, unshuffle=2, **kw)
    assert "unshuffle" not in UNet(2, 1, 3, base=4, depth=2).config  # old checkpoints rebuild


def test_an_unshuffled_unet_gives_its_sdf_and_edge_heads_at_full_resolution():
    # bcp's edge head and the dual-task methods' sdf head on the recipe's half-resolution net
    net = UNet(2, 1, 3, base=8, depth=2, unshuffle=2, sdf_head=True, edge_head=True)
    out = net(torch.randn(2, 1, 32, 24))
    assert out["sdf"].shape == (2, 2, 32, 24) and out["edge"].shape == (2, 1, 32, 24)
    assert out["sdf"].abs().max() <= 1


def test_a_folded_batch_norm_network_gives_the_same_output_with_no_batch_norm_left():
    torch.manual_seed(0)
    net = tiny_student(2, 1, 3, base=4, depth=2, norm="batch", unshuffle=2, dropout=0.1)
    net.train()
    with torch.no_grad():  # running statistics far from the identity, as after training
        for _ in range(3):
            net(3 + 2 * torch.randn(4, 1, 32, 32))
    net.eval()
    x = 3 + 2 * torch.randn(2, 1, 32, 48)
    folded = fold_batch_norm(net)
    assert has_batch_norm(net) and not has_batch_norm(folded)
    with torch.no_grad():
        torch.testing.assert_close(folded(x)["logits"], net(x)["logits"], atol=1e-5, rtol=1e-4)
    assert not has_batch_norm(fold_batch_norm(UNet(2, 1, 3, base=4, depth=2)))  # group: as is


@pytest.mark.parametrize("unshuffle", [1, 2])
def test_an_output_prior_makes_the_untrained_network_predict_it_at_every_pixel(unshuffle):
    from training.engine.networks import set_output_prior

    torch.manual_seed(0)
    net = UNet(2, 1, 3, base=8, depth=2, unshuffle=unshuffle).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        equal_odds = torch.softmax(net(x)["logits"], 1)
    assert float(equal_odds[:, 1].mean()) < 0.6
    # class 1 is the common one: each pixel of each r x r block must say so (but the rare one
    # the untrained weights push past a prior of 48:1)
    assert set_output_prior(net, [0.02, 0.96, 0.02])
    with torch.no_grad():
        probs = torch.softmax(net(x)["logits"], 1)
    said = probs.argmax(1) == 1
    r = unshuffle
    assert min(float(said[:, i::r, j::r].float().mean()) for i in range(r) for j in range(r)) > 0.98
    assert float(probs[:, 1].mean()) > 0.85
    with pytest.raises(ValueError, match="2 class shares for 3 classes"):
        set_output_prior(net, [0.5, 0.5])
