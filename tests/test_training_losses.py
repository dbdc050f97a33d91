import pytest
import torch

from training import IGNORE_INDEX
from training.engine.losses import (
    masked_ce_loss,
    one_hot,
    sigmoid_rampup,
    supervised_loss,
)


def _case():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[:, :4] = IGNORE_INDEX
    return logits, labels


def test_prediction_at_unannotated_voxels_does_not_change_loss():
    logits, labels = _case()
    other = logits.clone()
    other[:, :, :4] = torch.randn_like(other[:, :, :4]) * 10  # only where label is 255
    assert torch.allclose(supervised_loss(logits, labels), supervised_loss(other, labels))


def test_unannotated_voxels_get_no_gradient():
    logits, labels = _case()
    logits.requires_grad_(True)
    supervised_loss(logits, labels).backward()
    assert logits.grad[:, :, :4].abs().max() == 0
    assert logits.grad[:, :, 4:].abs().max() > 0


def test_ce_equals_ce_on_annotated_subset():
    logits, labels = _case()
    sub = torch.nn.functional.cross_entropy(logits[:, :, 4:], labels[:, 4:])
    assert torch.allclose(masked_ce_loss(logits, labels), sub)


def test_all_unannotated_gives_zero_with_graph():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), IGNORE_INDEX)
    loss = supervised_loss(logits, labels)
    assert loss.item() == 0
    loss.backward()


def test_one_hot_is_zero_at_255():
    labels = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    oh = one_hot(labels, 2)
    assert oh[0, :, 0, 2].sum() == 0
    assert oh[0, 1, 0, 1] == 1


def test_rampup_monotone_from_near_zero_to_one():
    vals = [sigmoid_rampup(s, 10) for s in range(12)]
    assert vals[0] < 0.01 and vals[-1] == 1.0
    assert all(a <= b for a, b in zip(vals, vals[1:], strict=False))


def test_all_unannotated_gives_zero_gradient():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), IGNORE_INDEX)
    supervised_loss(logits, labels).backward()
    assert logits.grad.abs().max() == 0


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_the_loss_never_branches_on_the_data():
    # A branch on a tensor's value reads it back to the host each step, which stalls a GPU
    # and breaks the capture of a step as a CUDA graph. Tracing records one graph; a branch
    # on the data would make the trace disagree with eager on other inputs.
    logits, labels = _case()
    traced = torch.jit.trace(supervised_loss, (logits, labels), check_trace=False)
    empty = torch.full_like(labels, IGNORE_INDEX)
    other = torch.randint(0, 3, labels.shape)
    for lab in (empty, other, labels):
        assert torch.allclose(traced(logits, lab), supervised_loss(logits, lab), atol=1e-6)
