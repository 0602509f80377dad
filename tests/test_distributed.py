"""Training on several processes computes what one process computes: DDP and FSDP (FSDP2's
fully_shard on gloo), with AdamW and with Muon, step for step; the optimizer's groups do not
depend on the strategy; the Newton-Schulz work is split, not repeated."""

import json
import os

import pytest
import torch
import torch.distributed as dist

from minigpt.core.model import GPT, GPTConfig
from minigpt.training import optimizers
from minigpt.training.optimizers import MuonWithAdamW, row_counts
from minigpt.training.sharding import full_tensor, shard_model, spawn_on_cpu

CONFIG = GPTConfig(vocab_size=13, block_size=16, n_layer=3, n_head=2, n_embd=16)
STEPS, BATCH, RANKS = 4, 8, 2
ADAMW = ("optimizer=adamw", "scheduler=warmup_cosine")


def make_optimizer(kind: str, named_parameters, group_names):
    groups = GPT(CONFIG).param_groups(named_parameters, group_names)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    return MuonWithAdamW(groups, lr=0.05, adamw_lr=1e-2, weight_decay=0.1)


def batches():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 13, (BATCH, 17), generator=generator) for _ in range(STEPS)]


def train(model, optimizer, rows: slice):
    """STEPS steps on `rows` of each global batch, clipped by the global norm 0.2 (below the
    norms these steps see, so that clipping acts); returns the norms."""
    norms = []
    for batch in batches():
        part = batch[rows]
        _, loss = model(part[:, :-1], part[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.2)
        norms.append(float(full_tensor(norm)))
        optimizer.step()
    return norms


def whole_weights(model) -> dict[str, torch.Tensor]:
    return {name: full_tensor(p).detach().clone() for name, p in model.named_parameters()}


def worker(rank: int, mesh, out: str) -> None:
    calls = []  # the shapes that this rank's Newton-Schulz calls see
    original = optimizers.newton_schulz
    optimizers.newton_schulz = lambda g, *a: calls.append(tuple(g.shape)) or original(g, *a)
    rows = slice(rank * BATCH // RANKS, (rank + 1) * BATCH // RANKS)
    results = {}
    for kind in ("adamw", "muon"):
        torch.manual_seed(0)
        start = GPT(CONFIG).state_dict()
        names = GPT(CONFIG).param_group_names()
        for strategy in ("ddp", "fsdp"):
            model = GPT(CONFIG)
            model.load_state_dict(start)
            if strategy == "fsdp":
                shard_model(model, mesh)
                wrapped, named = model, model.named_parameters()
            else:
                wrapped = torch.nn.parallel.DistributedDataParallel(model)
                named = model.named_parameters()
            optimizer = make_optimizer(kind, named, names)
            groups = [
                (g["name"], g["weight_decay"], [id(p) for p in g["params"]])
                for g in optimizer.param_groups
            ]
            by_id = {id(p): name for name, p in model.named_parameters()}
            groups = [(n, wd, [by_id[i] for i in ids]) for n, wd, ids in groups]
            calls.clear()
            norms = train(wrapped, optimizer, rows)
            results[(kind, strategy)] = (whole_weights(model), norms, groups)
            if kind == "muon":
                every_rank = [None] * RANKS
                dist.all_gather_object(every_rank, list(calls))
                results[("newton_schulz", strategy)] = every_rank
    if rank == 0:
        torch.save(results, out)


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "results.pt"
    spawn_on_cpu(worker, RANKS, str(out))
    return torch.load(out, weights_only=False)


def single_process(kind: str):
    torch.manual_seed(0)
    model = GPT(CONFIG)
    optimizer = make_optimizer(kind, model.named_parameters(), model.param_group_names())
    groups = [
        (
            g["name"],
            g["weight_decay"],
            [n for n, p in model.named_parameters() if any(p is q for q in g["params"])],
        )
        for g in optimizer.param_groups
    ]
    norms = train(model, optimizer, slice(None))
    return whole_weights(model), norms, groups


# Tolerances: the ranks' gradients are averaged in another order than one process sums a
# batch, so they differ by float32 rounding (~1e-7 relative). AdamW divides the gradient by
# the root of its running square: for a weight whose gradients are near 0 the quotient, and
# so the step, carries that difference up to ~1e-5 (measured after 4 steps: 6.1e-6). Muon
# rounds its input to bf16 (8 bits), which absorbs such differences (measured: 4.0e-7)
# until one straddles a rounding boundary: then an element of the update moves by one bf16
# step, a weight by ~lr x 2^-8 = 2e-4. The bound allows that; train.py runs of tens of
# steps, where such moves compound, are compared with AdamW.
TOLERANCE = {"adamw": 5e-5, "muon": 5e-4}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_two_processes_train_as_one(distributed_results, kind, strategy):
    weights, norms, _ = distributed_results[(kind, strategy)]
    single_weights, single_norms, _ = single_process(kind)
    # clipping by the global norm: the norm of all ranks' gradients, as one process sees it
    assert norms == pytest.approx(single_norms, rel=1e-5)
    assert min(single_norms) > 0.2  # clipping acted on every step
    worst = max((weights[n] - w).abs().max().item() for n, w in single_weights.items())
    print(f"{kind} {strategy}: max |delta| = {worst:.2e}")
    assert worst <= TOLERANCE[kind]
    moved = max(
        (w - GPT(CONFIG).state_dict()[n]).abs().max().item() for n, w in single_weights.items()
    )
    assert moved > 20 * TOLERANCE[kind]  # the steps moved the weights far beyond it


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_parameter_groups_and_decay_do_not_depend_on_the_strategy(distributed_results, strategy):
    for kind in ("adamw", "muon"):
        assert distributed_results[(kind, strategy)][2] == single_process(kind)[2]


def test_rows_are_split_as_fsdp_splits_them():
    for rows, ranks in [(96, 2), (7, 2), (3, 4), (1, 3)]:
        chunks = torch.arange(rows).chunk(ranks)
        expected = [len(c) for c in chunks] + [0] * (ranks - len(chunks))
        assert row_counts(rows, ranks) == expected


def test_each_matrix_is_orthogonalized_once_across_ranks(distributed_results):
    hidden = [tuple(p.shape) for p in GPT(CONFIG).param_groups()[0]["params"]]
    for strategy in ("ddp", "fsdp"):
        per_rank = distributed_results[("newton_schulz", strategy)]
        # every step, every matrix once, whole, on one of the ranks: half of them each
        assert sorted(sum(per_rank, [])) == sorted(hidden * STEPS)
        assert [len(calls) for calls in per_rank] == [len(hidden) * STEPS // RANKS] * RANKS


def test_fsdp_run_trains_as_one_process_and_its_checkpoint_reads_everywhere(
    tmp_path, cache_dir, compose_train, monkeypatch
):
    """train.py trainer=fsdp on 2 gloo processes, AdamW, each rank on its half of
    the batch one process draws (data.split_batches): the same weights as 1 process x batch
    8 after 20 steps, text samples and attention maps drawn from the gathered weights
    during the run (they would hang if rank 0 ran the sharded model alone), and a whole
    checkpoint that sample.py, eval.py and export.py read."""
    from conftest import ROOT, call
    from conftest import run as run_script

    from minigpt.commands import eval as eval_script
    from minigpt.commands import export as export_script
    from minigpt.commands import sample as sample_script
    from minigpt.commands import train as train_script

    result = run_script(
        "train.py",
        "experiment=tiny",
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *ADAMW,
        "data.batch_size=4",
        "data.split_batches=true",
        "trainer.limit_val_batches=1",
        "+callbacks.attention_maps._target_=minigpt.training.callbacks.tensorboard.AttentionMaps",
        "+callbacks.attention_maps.max_tokens=8",
        f"paths.cache_dir={cache_dir}",
        "sample.num_samples=1",
        f"hydra.run.dir={tmp_path / 'fsdp'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--- sample (best checkpoint) ---" in result.stdout
    single_dir = tmp_path / "single"
    single_cfg = compose_train(
        "experiment=tiny",
        *ADAMW,
        "data.batch_size=8",
        "trainer.limit_val_batches=1",
        "sample.num_samples=0",
        "logger=none",
        output_dir=single_dir,
    )
    train_script.train(single_cfg)
    fsdp_ckpt = tmp_path / "fsdp" / "checkpoints" / "last.ckpt"
    sharded = torch.load(fsdp_ckpt, weights_only=True)
    single = torch.load(single_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert sharded["global_step"] == single["global_step"] == 20
    worst = max((sharded["state_dict"][n] - v).abs().max() for n, v in single["state_dict"].items())
    assert worst <= 1e-5  # 20 AdamW steps of the rounding differences above (measured 3.1e-7)
    metrics = json.loads((tmp_path / "fsdp" / "metrics.json").read_text())
    assert metrics["tokens_seen"] == 20 * 8 * 32

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "fsdp" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Tensors("samples/text_summary")] == [10, 20]
    assert [e.step for e in events.Images("attention")] == [10, 20]

    monkeypatch.chdir(tmp_path)
    argv = [f"ckpt_path={fsdp_ckpt}"]
    assert call(sample_script.main, ["sample.py", *argv, "max_new_tokens=5"]) == 0
    evaluated = ["eval.py", *argv, "limit=8"]
    assert call(eval_script.main, evaluated) == 0
    exported = tmp_path / "hf"
    assert call(export_script.main, ["export.py", *argv, f"out_dir={exported}"]) == 0
    assert (exported / "config.json").is_file()
    del ROOT


@pytest.mark.slow  # 20 s each
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_steps_between_logging_steps_read_no_device_value_on_two_processes(
    tmp_path, cache_dir, strategy
):
    """As tests/test_step_path.py on one device: under DDP and FSDP too, only logging steps
    read values (the stop flag and the timed checkpoint are agreed on there)."""
    from conftest import ROOT
    from conftest import run as run_script

    result = run_script(
        "train.py",
        "experiment=tiny",
        f"trainer={strategy}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=30",
        "trainer.log_every_n_steps=5",
        "trainer.val_check_interval=15",
        "callbacks.last_checkpoint.every_n_minutes=0.0001",  # due at every agreement
        "sample.num_samples=0",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "+callbacks.reads._target_=probes.CountScalarReads",
        f"+callbacks.reads.out_dir={tmp_path / 'reads'}",
        cwd=tmp_path,
        pythonpath=ROOT / "tests",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    logging_steps = set(range(5, 31, 5))
    for rank in (0, 1):
        reads = json.loads((tmp_path / "reads" / f"reads-rank{rank}.json").read_text())
        per_step = {int(step): n for step, n in reads.items()}
        assert {s for s, n in per_step.items() if n} <= logging_steps, (rank, per_step)
        assert all(per_step.get(s, 0) > 0 for s in logging_steps)  # the probe does see reads


def test_tokens_seen_count_each_session_at_its_own_tokens_per_step():
    """A run resumed on another number of devices: the steps before the resume count at the
    old tokens per step, the steps after at the new (not every step at the new)."""
    from minigpt.training.run import RunReport

    first = RunReport({}, {}, "unused", tokens_per_step=256)
    first._trainer = type("Trainer", (), {"global_step": 10})()
    saved = first.state_dict()
    assert saved["tokens_seen"] == [10, 2560]
    resumed = RunReport({}, {}, "unused", tokens_per_step=1024)  # 4 devices instead of 1
    resumed.load_state_dict(saved)
    assert resumed.tokens_seen(30) == 2560 + 20 * 1024
    resumed._trainer = type("Trainer", (), {"global_step": 30})()
    again = RunReport({}, {}, "unused", tokens_per_step=512)
    again.load_state_dict(resumed.state_dict())
    assert again.tokens_seen(40) == 2560 + 20 * 1024 + 10 * 512


def test_a_single_process_checkpoint_resumes_under_fsdp(tmp_path, compose_train):
    """10 steps with the plain module, 10 more sharded (FSDP on one process: the same
    batches, DTensor weights and optimizer state): the weights of an uninterrupted 20-step
    run, which holds only if every optimizer state went back to its own parameter
    (Lightning's FSDP loader would match them by model.parameters() order, not by the
    optimizer's groups: the Adam moments of one matrix on another of the same shape)."""
    from minigpt.commands import train as train_script
    from minigpt.training.run import release_run_dir

    common = ("experiment=tiny", *ADAMW, "sample.num_samples=0", "logger=none")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_script.train(compose_train(*common, output_dir=whole))
    first = ("trainer.max_steps=10", "scheduler.decay_steps=20")
    train_script.train(compose_train(*common, *first, output_dir=resumed))
    release_run_dir(resumed)  # held by this process for the run, as train.py's main would
    sharded = compose_train(
        *common,
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "scheduler.decay_steps=20",
        "ckpt_path=last",
        output_dir=resumed,
    )
    environment = dict(os.environ)
    try:
        train_script.train(sharded)
    finally:  # the strategy sets up torch.distributed in this process: undo it for others
        os.environ.clear()
        os.environ.update(environment)
        if dist.is_initialized():
            dist.destroy_process_group()
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert max((a[n] - b[n]).abs().max() for n in a) <= 1e-6


@pytest.mark.slow  # 17 s
def test_processes_started_by_torchrun_tokenize_a_fresh_corpus_once(tmp_path):
    """torchrun starts both ranks at once, each composing its config and preparing its data
    before the trainer exists: one tokenizes (and trains the BPE tokenizer), the other waits
    for the cache entry and reads it."""
    import subprocess
    import sys

    from conftest import ROOT

    cache = tmp_path / "fresh_cache"
    env = os.environ | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "train.py"),
            "experiment=tiny",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_steps=2",
            "sample.num_samples=0",
            "data=shakespeare_bpe",
            "data.tokenizer.vocab_size=300",
            "data.tokenizer.sample_mb=1",
            f"paths.cache_dir={cache}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count("token cache: ") == 1, output[-3000:]
    assert "waiting for another process to prepare the token cache" in output
    assert len(list(cache.glob("bpe-*.json"))) == 1


def test_compile_with_fsdp_is_refused_before_anything_is_written(compose_train, tmp_path):
    from minigpt.commands import train as train_script

    cfg = compose_train("experiment=tiny", "trainer=fsdp", "trainer.devices=1", "compile=true")
    with pytest.raises(ValueError, match="compile=true with trainer=fsdp is not supported"):
        train_script.train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_a_checkpoint_saved_before_the_new_options_resumes_with_their_defaults(tmp_path):
    """data.split_batches and optimizer.ns_dtype were added after runs were saved: a saved
    config without them ran as their defaults do, and resumes; another value is refused."""
    from minigpt.training.run import check_resume_config

    current = {
        "data": {"batch_size": 8, "split_batches": False},
        "optimizer": {"lr": 0.05, "ns_dtype": "bfloat16"},
    }
    saved = {"data": {"batch_size": 8}, "optimizer": {"lr": 0.05}}
    check_resume_config(saved, current, tmp_path / "last.ckpt")
    changed = current | {"optimizer": {"lr": 0.05, "ns_dtype": "float32"}}
    with pytest.raises(ValueError, match="optimizer.ns_dtype='float32' changes the run"):
        check_resume_config(saved, changed, tmp_path / "last.ckpt")
