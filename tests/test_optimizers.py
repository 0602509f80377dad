import copy

import pytest
import torch

from minigpt.core.model import GPT, GPTConfig
from minigpt.training.optimizers import MuonWithAdamW

SETTINGS = dict(lr=0.05, momentum=0.95, adamw_lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)


def tiny_model() -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=8)
    return GPT(config)


def train(model: GPT, optimizers: list, steps: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 11, (4, 17), generator=generator)
        _, loss = model(idx[:, :-1], idx[:, 1:])
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    model = tiny_model()
    optimizer = MuonWithAdamW(model.param_groups(), **SETTINGS)
    in_muon = {id(p) for g in optimizer.muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in optimizer.adamw.param_groups for p in g["params"]}
    names = {id(p): name for name, p in model.named_parameters()}
    assert {names[i] for i in in_muon} == {
        name for name, p in model.named_parameters() if name.startswith("blocks.") and p.dim() == 2
    }
    assert in_muon.isdisjoint(in_adamw) and len(in_muon | in_adamw) == len(names)
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 1e-2, 1e-2]


def test_steps_equal_muon_and_adamw_stepped_apart():
    combined, apart = tiny_model(), tiny_model()
    optimizer = MuonWithAdamW(combined.param_groups(), **SETTINGS)
    hidden, *others = apart.param_groups()
    muon = torch.optim.Muon([hidden], lr=0.05, momentum=0.95, weight_decay=0.0)
    adamw = torch.optim.AdamW(others, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    train(combined, [optimizer], steps=5)
    train(apart, [muon, adamw], steps=5)
    for (name, a), b in zip(combined.named_parameters(), apart.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(combined.wte.weight, tiny_model().wte.weight)


def test_a_schedule_drives_both_and_a_saved_state_resumes_exactly(tmp_path):
    model = tiny_model()
    optimizer = MuonWithAdamW(model.param_groups(), **SETTINGS)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)
    assert [g["lr"] for g in optimizer.muon.param_groups] == [0.025]
    assert [g["lr"] for g in optimizer.adamw.param_groups] == [5e-3, 5e-3]
    train(model, [optimizer], steps=3)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "s")
    saved = torch.load(tmp_path / "s", weights_only=True)  # plain data, as in checkpoints
    resumed = copy.deepcopy(model)
    resumed.load_state_dict(saved["model"])
    again = MuonWithAdamW(resumed.param_groups(), **SETTINGS)
    again.load_state_dict(saved["optimizer"])
    assert again.muon.state is again.state and again.adamw.param_groups[0] is again.param_groups[1]
    assert again.param_groups[0]["lr"] == 0.025  # the scheduled lr came back with the state
    train(model, [optimizer], steps=3, seed=1)
    train(resumed, [again], steps=3, seed=1)
    for (name, a), b in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name
    del schedule


def test_parameters_without_named_groups_are_refused():
    with pytest.raises(ValueError, match="needs named parameter groups"):
        MuonWithAdamW(tiny_model().parameters())
    hidden = tiny_model().param_groups()[:1]
    with pytest.raises(ValueError, match="a 'hidden' group and at least one other"):
        MuonWithAdamW(hidden)


@pytest.mark.parametrize("shape", [(24, 8), (8, 24), (16, 16)])
def test_our_newton_schulz_in_bfloat16_is_torchs(shape):
    """The same operations in the same order as torch.optim.Muon's iteration: bit for bit,
    tall, wide and square; in float32 the same iteration, rounded less."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    from minigpt.training.optimizers import newton_schulz

    update = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    coefficients = (3.4445, -4.7750, 2.0315)
    theirs = _zeropower_via_newtonschulz(update, coefficients, 5, 1e-7)
    ours = newton_schulz(update, coefficients, 5, 1e-7, torch.bfloat16)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, theirs)
    fp32 = newton_schulz(update, coefficients, 5, 1e-7, torch.float32)
    assert fp32.dtype == torch.float32 and not torch.equal(fp32, theirs.float())
    assert (fp32 - theirs.float()).abs().max() < 0.05  # bf16's rounding, not another result
    singular = torch.linalg.svdvals(fp32)
    assert singular.min() > 0.5 and singular.max() < 1.3  # near-orthogonal: U S' V^T


def test_muon_in_float32_steps_and_a_bad_dtype_is_refused():
    model = tiny_model()
    optimizer = MuonWithAdamW(model.param_groups(), ns_dtype="float32", **SETTINGS)
    train(model, [optimizer], steps=2)
    assert not torch.equal(
        model.blocks[0].attn.c_attn.weight, tiny_model().blocks[0].attn.c_attn.weight
    )
    with pytest.raises(
        ValueError, match="optimizer.ns_dtype='float16' is not one of bfloat16, float32, auto"
    ):
        MuonWithAdamW(tiny_model().param_groups(), ns_dtype="float16", **SETTINGS)


@pytest.mark.parametrize("bf16_instructions", [False, True], ids=["avx2", "avx512_bf16"])
def test_auto_iterates_in_bfloat16_only_where_the_device_multiplies_it(
    bf16_instructions, monkeypatch
):
    """ns_dtype=auto on a CPU: the float32 iteration's steps without bfloat16 instructions,
    the bfloat16 one's with them (bit for bit); on a GPU always bfloat16. The speedrun's
    precision follows the same instructions."""
    from minigpt.training import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: bf16_instructions)
    expected = "bfloat16" if bf16_instructions else "float32"
    models = {}
    for dtype in ("auto", expected):
        models[dtype] = tiny_model()
        optimizer = MuonWithAdamW(models[dtype].param_groups(), ns_dtype=dtype, **SETTINGS)
        train(models[dtype], [optimizer], steps=2)
    for (name, mine), theirs in zip(
        models["auto"].named_parameters(), models[expected].parameters(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    assert precision.newton_schulz_dtype(torch.device("cuda")) == torch.bfloat16
    assert precision.cpu_precision() == ("bf16-mixed" if bf16_instructions else "32-true")


def test_bfloat16_instructions_are_read_from_the_cpu_flags(monkeypatch, tmp_path):
    from minigpt.training import precision

    flags = {"avx2": False, "avx2 avx512f avx512_bf16": True, "amx_bf16 amx_tile": True}
    for line, has in flags.items():
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu sse {line}\n")
        monkeypatch.setattr(precision, "Path", lambda _: tmp_path / "cpuinfo")
        precision.cpu_has_bf16.cache_clear()
        assert precision.cpu_has_bf16() == has, line
    precision.cpu_has_bf16.cache_clear()


def spread_update(shape, seed: int = 0) -> torch.Tensor:
    """A matrix whose singular values span 1e-3 to 1 (a gradient's are far from equal)."""
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=generator))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=generator))
    k = min(shape)
    singular = torch.logspace(-3, 0, k, dtype=torch.float64).float()
    return u[:, :k] @ torch.diag(singular) @ v[:, :k].T


@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (32, 32)])
def test_polar_express_orthogonalizes_closer_than_jordans_quintic(shape):
    from minigpt.training.optimizers import POLAR_EXPRESS, newton_schulz

    update = spread_update(shape)
    jordan = newton_schulz(update, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float32)
    polar = newton_schulz(update, POLAR_EXPRESS, 5, 1e-7, torch.float32)
    jordan_singular, polar_singular = torch.linalg.svdvals(jordan), torch.linalg.svdvals(polar)
    # measured: Jordan's 0.29-0.37 to 1.16-1.19, Polar Express's 0.55-0.69 to 1.14
    assert jordan_singular.min() < 0.4 and polar_singular.min() > 0.5
    assert (polar_singular - 1).abs().max() < 0.7 * (jordan_singular - 1).abs().max()
    # both approach U V^T, the orthogonal factor; Polar Express the closer
    u, _, vt = torch.linalg.svd(update, full_matrices=False)
    assert (polar - u @ vt).norm() < 0.6 * (jordan - u @ vt).norm()


def test_polar_express_steps_the_optimizer_and_bad_options_are_refused():
    models = {}
    for method in ("jordan", "polar_express"):
        models[method] = tiny_model()
        optimizer = MuonWithAdamW(models[method].param_groups(), ns_method=method, **SETTINGS)
        train(models[method], [optimizer], steps=2)
    jordan, polar = (models[m].blocks[0].mlp.c_fc.weight for m in ("jordan", "polar_express"))
    assert not torch.equal(jordan, polar)
    bad = [
        (dict(ns_method="svd"), "optimizer.ns_method='svd' is not one of jordan, polar_express"),
        (dict(ns_method="polar_express", ns_steps=6), "optimizer.ns_steps=6: Polar Express"),
        (dict(momentum_warmup_steps=-1), "optimizer.momentum_warmup_steps=-1 must be"),
        (dict(momentum_warmup_steps=1.5), "optimizer.momentum_warmup_steps=1.5 must be"),
        (dict(momentum_start=1.0), r"optimizer.momentum_start=1.0 must be in \[0, 1\)"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            MuonWithAdamW(tiny_model().param_groups(), **(SETTINGS | options))


def test_momentum_warms_up_linearly_and_resumes_mid_warm_up(tmp_path):
    """momentum_warmup_steps=4 from 0.5 to 0.95: steps 0..4 use 0.5, 0.6125, 0.725, 0.8375,
    0.95, then 0.95: torch's Muon given those momenta by hand, to the bit."""
    warm = dict(momentum_warmup_steps=4, momentum_start=0.5)
    model, reference = tiny_model(), tiny_model()
    optimizer = MuonWithAdamW(model.param_groups(), **(SETTINGS | warm))
    hidden, *others = reference.param_groups()
    muon = torch.optim.Muon([hidden], lr=0.05, momentum=0.5, weight_decay=0.0)
    adamw = torch.optim.AdamW(others, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    for step in range(6):
        muon.param_groups[0]["momentum"] = 0.5 + min(step / 4, 1.0) * (0.95 - 0.5)
        train(model, [optimizer], steps=1, seed=step)
        train(reference, [muon, adamw], steps=1, seed=step)
        if step == 1:  # saved and restored mid-warm-up: the count comes back with the state
            torch.save(optimizer.state_dict(), tmp_path / "state")
            again = MuonWithAdamW(model.param_groups(), **(SETTINGS | warm))
            again.load_state_dict(torch.load(tmp_path / "state", weights_only=True))
            optimizer = again
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_polar_express_applies_its_quintic_of_each_step_to_every_singular_value():
    """A matrix with equal singular values: each step maps s to a s + b s^3 + c s^5 with
    that step's coefficients, starting from s = 1 / (1.02 x the Frobenius norm)."""
    from minigpt.training.optimizers import POLAR_EXPRESS, newton_schulz

    generator = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator, dtype=torch.float64))
    update = 3.0 * q[:, :4]  # 8 x 4, every singular value 3
    s = 3.0 / (1.02 * update.norm().item())
    for steps in (1, 3, 5):
        expected = s
        for a, b, c in POLAR_EXPRESS[:steps]:
            expected = a * expected + b * expected**3 + c * expected**5
        result = newton_schulz(update, POLAR_EXPRESS, steps, 1e-7, torch.float64)
        torch.testing.assert_close(result, expected * q[:, :4])


@pytest.fixture
def gram_calls(monkeypatch) -> list[tuple[tuple[int, int], int]]:
    """(shape, steps) of each call of the Gram-space iteration, as it happens."""
    from minigpt.training import optimizers

    calls = []
    original = optimizers.gram_newton_schulz

    def spy(x, each_step):
        calls.append((tuple(x.shape), len(each_step)))
        return original(x, each_step)

    monkeypatch.setattr(optimizers, "gram_newton_schulz", spy)
    return calls


@pytest.mark.parametrize("method", ["jordan", "polar_express"])
@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (20, 48)])
def test_the_gram_space_iteration_is_the_direct_one(method, shape, gram_calls):
    """X_k = M_k X_0 computed on short x short matrices: in float64 the direct iteration's
    result to 1e-12, for every number of steps; in float32 within 1e-3 of it (the Gram
    matrix squares the singular values' spread: measured 2e-4 to 6e-4 here, the direct
    iteration 3e-6 to 6e-6, and 1e-2 in bfloat16); in bfloat16 left to the direct one."""
    from minigpt.training.optimizers import POLAR_EXPRESS, newton_schulz

    coefficients = POLAR_EXPRESS if method == "polar_express" else (3.4445, -4.7750, 2.0315)
    update = spread_update(shape).double()
    for steps in (2, 3, 5):
        direct = newton_schulz(update, coefficients, steps, 1e-7, torch.float64)
        gram = newton_schulz(update, coefficients, steps, 1e-7, torch.float64, True)
        torch.testing.assert_close(gram, direct, rtol=0, atol=1e-12)
    assert [steps for _, steps in gram_calls] == [2, 3, 5]
    gram32 = newton_schulz(update, coefficients, 5, 1e-7, torch.float32, True)
    assert (gram32 - direct).norm() < 1e-3 * direct.norm()
    direct = newton_schulz(update, coefficients, 5, 1e-7, torch.bfloat16)
    assert torch.equal(newton_schulz(update, coefficients, 5, 1e-7, torch.bfloat16, True), direct)
    assert [steps for _, steps in gram_calls] == [2, 3, 5, 5]


def test_the_gram_space_is_taken_where_it_multiplies_less():
    from minigpt.training.optimizers import gram_space_pays, iteration_cost

    assert gram_space_pays((128, 512), 5) and gram_space_pays((384, 128), 5)
    assert not gram_space_pays((128, 128), 5) and not gram_space_pays((128, 192), 5)
    assert not gram_space_pays((128, 512), 1)  # one step: the same products
    for short, long in [(128, 193), (128, 512), (64, 1024)]:  # gram's cost below the direct
        gram = 2 * short * short * long + (4 * 5 - 3) * short**3
        assert gram < 5 * iteration_cost((short, long))


def test_muon_in_the_gram_space_steps_as_the_direct_one_and_bad_values_are_refused(
    gram_calls,
):
    direct, gram = tiny_model(), tiny_model()
    for model, ns_gram in ((direct, False), (gram, True)):
        # 8 x 32 matrices (the MLP's) are 4x as long as wide
        optimizer = MuonWithAdamW(
            model.param_groups(), ns_dtype="float32", ns_gram=ns_gram, **SETTINGS
        )
        train(model, [optimizer], steps=3)
    # each step: c_attn (24 x 8), c_fc (32 x 8), the MLP's c_proj (8 x 32) of each block;
    # never the square attention c_proj
    shapes = [shape for shape, _ in gram_calls]  # the matrices the Gram space is taken for
    assert sorted(set(shapes)) == [(8, 24), (8, 32)] and len(shapes) == 3 * 2 * 3
    assert not torch.equal(direct.blocks[0].mlp.c_fc.weight, gram.blocks[0].mlp.c_fc.weight)
    for (name, a), b in zip(direct.named_parameters(), gram.parameters(), strict=True):
        # each step moves a matrix by about 0.05 (lr x the orthogonalized update's entries)
        torch.testing.assert_close(a, b, rtol=0, atol=2e-4, msg=name)
    with pytest.raises(ValueError, match="optimizer.ns_gram='yes' must be true or false"):
        MuonWithAdamW(tiny_model().param_groups(), ns_gram="yes", **SETTINGS)
