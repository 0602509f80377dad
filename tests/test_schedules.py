import math

import pytest
import torch

from minigpt.training.schedules import constant, warmup_cosine


def nanogpt_lr(it, learning_rate=1e-3, warmup_iters=100, lr_decay_iters=2000, min_lr=1e-4):
    """nanoGPT's get_lr, written out independently."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_warmup_cosine_matches_nanogpt_every_step():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    got = lrs(warmup_cosine(opt, warmup_steps=100, decay_steps=2000, min_lr=1e-4), 2200)
    for step in range(2200):
        assert got[step] == pytest.approx(nanogpt_lr(step), rel=1e-9), step


def test_every_group_decays_from_its_own_lr():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 2e-3}], lr=1e-3)
    sched = warmup_cosine(opt, warmup_steps=0, decay_steps=10, min_lr=1e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 2e-3])
    for _ in range(10):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-4])


def test_constant_with_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    assert lrs(constant(opt, warmup_steps=3), 6) == pytest.approx(
        [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(warmup_steps=-1, decay_steps=50, min_lr=0.0), "warmup_steps=-1"),
        (dict(warmup_steps=0, decay_steps=0, min_lr=0.0), "decay_steps=0"),
        (dict(warmup_steps=0, decay_steps=50, min_lr=1.0), "min_lr=1.0"),
    ],
)
def test_bad_schedules_are_rejected(kwargs, message):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with pytest.raises(ValueError, match=message):
        warmup_cosine(opt, **kwargs)


def test_a_warmup_longer_than_the_run_is_cut_to_a_tenth_of_it(caplog):
    """trainer.max_steps=50 with the default 100 warm-up steps: a run, not an error."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with caplog.at_level("WARNING", logger="minigpt.training.schedules"):
        got = lrs(warmup_cosine(opt, warmup_steps=100, decay_steps=50, min_lr=1e-4), 60)
    assert (
        "warmup_steps=100 does not end before the decay starts at step 50 of decay_steps=50"
        in caplog.text
    )
    assert "over 5 steps" in caplog.text
    assert got[:6] == pytest.approx([1e-3 * (i + 1) / 6 for i in range(5)] + [1e-3])
    assert got[50:] == pytest.approx([1e-4] * 10)
    assert max(got) == pytest.approx(1e-3)


def test_warmup_stable_decay_holds_then_falls_linearly_in_every_group():
    from minigpt.training.schedules import warmup_stable_decay

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.05}, {"params": [b], "lr": 0.01}])
    schedule = warmup_stable_decay(opt, warmup_steps=10, decay_steps=100, cooldown=0.4)
    got = []
    for _ in range(120):
        got.append([g["lr"] for g in opt.param_groups])
        opt.step()
        schedule.step()
    muon_like = [lr for lr, _ in got]
    assert muon_like[:10] == pytest.approx([0.05 * (i + 1) / 11 for i in range(10)])
    assert muon_like[10:61] == pytest.approx([0.05] * 51)  # held until 60% of the steps
    assert muon_like[80] == pytest.approx(0.025)  # half-way down the cooldown
    assert muon_like[100:] == pytest.approx([0.0] * 20)
    assert [small for _, small in got] == pytest.approx([0.2 * large for large, _ in got])
    with pytest.raises(ValueError, match="cooldown=0"):
        warmup_stable_decay(opt, warmup_steps=10, decay_steps=100, cooldown=0)
    with pytest.raises(ValueError, match="final_ratio=2"):
        warmup_stable_decay(opt, warmup_steps=10, decay_steps=100, final_ratio=2)


def test_a_warmup_that_would_overlap_wsds_decay_ends_before_it(caplog):
    """max_steps=150 with WSD's default cooldown: the decay starts at step 75, so the
    100-step warm-up is cut to a tenth of 75 steps; the lr never rises again once it falls."""
    from minigpt.training.schedules import warmup_stable_decay

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with caplog.at_level("WARNING"):
        got = lrs(warmup_stable_decay(opt, warmup_steps=100, decay_steps=150), 150)
    assert "does not end before the decay starts at step 75" in caplog.text
    peak = got.index(max(got))
    assert peak == 7 and got[peak] == 1.0
    assert all(b <= a for a, b in zip(got[peak:], got[peak + 1 :], strict=False))
    assert got[75] == 1.0 and got[149] < 0.02
