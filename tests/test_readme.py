"""The commands of the README and of every page of docs/, run as written, in order, in a
scratch directory: every line of their bash blocks, at tiny sizes, so that no page can drift
from the code. Blocks marked `sh` are for other machines (a cluster, a GPU machine): each
train.py line in them is composed (--cfg job), not run.

`python train.py`, `sample.py`, `eval.py`, `export.py`, `explain.py`, `minigpt <command>` and
`python -m minigpt.tools.sweep_report` run in this process (the same entry points the command
line calls, without seconds of start-up each); other lines (`RUN=$(...)`, `printf`) run in
bash. Sizes shrink by appending overrides (TINY); the pages' own values of those keys give
way, except sweeps over them, and the test prints every line whose values it changed.
Skipped: `make test`/`make train`/`make tensorboard`/`pytest ...` (this suite, the full
1200-step run, a server), `source` (this interpreter is the environment's) and `curl` (no
network in tests: tinyshakespeare.txt is written locally). The NumPy proofs (40 s), the SLURM
sweep and the IsoFLOP study (at tiny sizes: ISOFLOP_TINY) run in the slow test.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from conftest import ISOFLOP_TINY, ROOT, call
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from minigpt.commands import eval as eval_script
from minigpt.commands import explain as explain_script
from minigpt.commands import export as export_script
from minigpt.commands import isoflop
from minigpt.commands import prepare as prepare_script
from minigpt.commands import sample as sample_script
from minigpt.commands import train as train_script
from minigpt.core.threads import DEFAULT_THREADS
from minigpt.core.tokenizers import BPETokenizer
from minigpt.data.corpus import shakespeare_works
from minigpt.tools import sweep_report

README = ROOT / "README.md"
# the README, then the pages of docs/ in the order a reader meets them: their commands run
# one after the other in one directory, as a reader would run them
PAGES = [
    README,
    *(
        ROOT / "docs" / name
        for name in (
            "configuration.md",
            "data.md",
            "model.md",
            "gpus.md",
            "evaluation.md",
            "gpt2.md",
            "inside.md",
            "long-runs.md",
            "speedrun.md",
            "sweeps.md",
            "scaling.md",
            "figures.md",
            "fundamentals.md",
        )
    ),
]
TINY = {
    "model.n_layer": "1",
    "model.n_embd": "32",
    "model.n_head": "2",
    "model.block_size": "32",
    "data.batch_size": "4",
    "trainer.val_check_interval": "2",
    "trainer.limit_val_batches": "2",
    "trainer.log_every_n_steps": "1",
    "sample.max_new_tokens": "8",
    "callbacks.text_samples.max_new_tokens": "8",
    "hydra.sweeper.n_trials": "2",
    "trainer.devices": "2",  # the SLURM sweep's 8 DDP tasks
    "compile": "false",  # 6 s of compiling on a CPU (tests/test_step_path.py compiles)
}
# the 4-job grid: make test runs the README's 2-job sweep, the slow tests the grid
SLOW = ("python -m minigpt.fundamentals", "hydra/launcher=slurm", "minigpt isoflop", "n_layer=2,4 ")
SKIPPED = ("make test", "make tensorboard", "source ", "curl ", "pytest ")
# what lines that would download read here instead (the fixture writes these files): the
# web corpus from docs.jsonl, GPT-2's tokenizer from a BPE of ours in GPT-2's files, GPT-2's
# weights from ./gpt2 (a small GPT2LMHeadModel), HellaSwag from a file in its format; the
# 8-GPU line runs on this one process, with the global batch of one tiny batch
SHARDS_OFFLINE = [
    "data.tokenizer.files=gpt2",
    "data.shards.builder=json",
    "data.shards.data_files=[docs.jsonl]",
    "data.shards.shard_tokens=20000",
]
GPT2_TINY = ["global_batch_tokens=128", "trainer.precision=32-true"]


def offline(args: list[str]) -> list[str]:
    """A train.py or prepare.py line's arguments with the offline stand-ins above."""
    if not any(a.startswith("experiment=gpt2_124m") or a == "data=fineweb" for a in args):
        return args
    kept = [a for a in args if a != "trainer=ddp" and not a.startswith("trainer.devices=")]
    return kept + SHARDS_OFFLINE + GPT2_TINY


def skipped(line: str) -> bool:
    return line.startswith(SKIPPED) or shlex.split(line, comments=True) == ["make", "train"]


def readme_commands(fence: str = "bash") -> list[str]:
    """The lines of the pages' code blocks in `fence` (bash: run here; sh: for other
    machines), continuations joined, comments kept (shlex drops them)."""
    pattern = rf"```{fence}\n(.*?)```"
    blocks = [b for page in PAGES for b in re.findall(pattern, page.read_text(), flags=re.DOTALL)]
    return [
        line.strip()
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_every_page_of_docs_is_read():
    assert {p.name for p in PAGES[1:]} == {p.name for p in (ROOT / "docs").glob("*.md")}
    assert len(README.read_text().splitlines()) <= 200  # a quick start; the rest is in docs/


def tiny_args(args: list[str], cache_dir: Path, changed: list[str] | None = None) -> list[str]:
    """The command's arguments with the sizes of TINY (max_steps scaled: 5000 -> 5). Each
    value the command gave that this replaces is added to `changed` as "key: old -> new"."""
    given = dict(a.split("=", 1) for a in args if "=" in a and not a.startswith("-"))
    changed = [] if changed is None else changed
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "trainer.max_steps":
            arg = f"{key}={max(4, int(value) // 1000)}"
            changed.append(f"{key}: {value} -> {arg.partition('=')[2]}")
        elif key in TINY and "," not in value:
            if value != TINY[key] and "--cfg" not in args:
                changed.append(f"{key}: {value} -> {TINY[key]}")
            continue  # replaced below
        out.append(arg)
    if "trainer.max_steps" not in given:
        out.append("trainer.max_steps=4")
    if "--cfg" in args:
        return out
    extra = {
        k: v for k, v in TINY.items() if not ("," in given.get(k, "") or k == "trainer.devices")
    }
    if "trainer.devices" in given:
        extra["trainer.devices"] = TINY["trainer.devices"]
    if "hparams_search=optuna" not in args:
        extra.pop("hydra.sweeper.n_trials")
    if "experiment=speedrun_cpu" in args:  # it draws no text samples
        extra.pop("callbacks.text_samples.max_new_tokens")
    return out + [f"{k}={v}" for k, v in extra.items()] + [f"paths.cache_dir={cache_dir}"]


class Readme:
    """Runs README lines one after the other in one directory, keeping shell variables."""

    def __init__(self, cwd: Path, cache_dir: Path):
        self.cwd, self.cache_dir, self.vars = cwd, cache_dir, {}
        self.changed: dict[str, list[str]] = {}  # line -> the values run smaller than written

    def wait_for_a_free_second(self) -> None:
        """A run directory is named by the second and the process id, which is this one's
        for every command: wait while the current second's name is taken."""
        while True:
            now = datetime.now()
            taken = self.cwd / "outputs" / f"{now:%Y-%m-%d}" / f"{now:%H-%M-%S}-{os.getpid()}"
            if not taken.exists():
                return
            time.sleep(0.05)

    def expand(self, text: str) -> str:
        return re.sub(r"\$(\w+)", lambda m: self.vars.get(m.group(1), m.group(0)), text)

    def bash(self, line: str) -> int:
        done = subprocess.run(
            ["bash", "-c", line], cwd=self.cwd, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{line}: {done.stderr}"
        return done.stdout

    def run(self, line: str) -> int:
        if assignment := re.fullmatch(r"(\w+)=\$\(([^)]*)\)(\s+#.*)?", line):
            self.vars[assignment[1]] = self.bash(assignment[2]).strip()
            return 0
        words = shlex.split(self.expand(line), comments=True)
        if words[:2] == ["minigpt", "isoflop"]:
            args = [*words[2:], *ISOFLOP_TINY, f"paths.cache_dir={self.cache_dir}"]
            return isoflop.main(args)
        if words[0] == "minigpt":  # the console command: minigpt <command> = <command>.py
            words = ["python", f"{words[1]}.py", *words[2:]]
        if words[:2] == ["make", "train"]:  # the Makefile's recipe: $(PY) train.py $(ARGS)
            words = ["python", "train.py", *shlex.split(words[2].removeprefix("ARGS="))]
        if words[:2] == ["python", "train.py"]:
            self.wait_for_a_free_second()
            changed = self.changed.setdefault(line, [])
            args = tiny_args(offline(words[2:]), self.cache_dir, changed)
            return call(train_script.cli, ["train.py", *args])
        if words[:2] == ["python", "prepare.py"]:
            args = [*offline(words[2:]), f"paths.cache_dir={self.cache_dir}"]
            return call(prepare_script.main, ["prepare.py", *args])
        if words[:2] == ["python", "eval.py"]:
            args = words[2:]
            if "task=hellaswag" in args and not any(a.startswith("hellaswag.file=") for a in args):
                args = [*args, "hellaswag.file=hellaswag_val.jsonl"]
            return call(eval_script.main, ["eval.py", *args])
        if words[:2] == ["python", "explain.py"]:
            return call(explain_script.main, ["explain.py", *words[2:]])
        if words[:2] == ["python", "export.py"]:
            return call(export_script.main, ["export.py", *words[2:]])
        if words[:2] == ["python", "-c"]:
            return subprocess.run(
                [sys.executable, *words[1:]], cwd=self.cwd, timeout=120
            ).returncode
        if words[:2] == ["python", "sample.py"]:
            args = [a for a in words[2:] if not a.startswith("max_new_tokens=")]
            return call(sample_script.main, ["sample.py", *args, "max_new_tokens=8"])
        if words[:3] == ["python", "-m", "minigpt.tools.sweep_report"]:
            return sweep_report.main(words[3:])
        if words[:3] == ["python", "-m", "minigpt.fundamentals"]:  # the installed package
            command = [sys.executable, *words[1:]]
            return subprocess.run(command, cwd=self.cwd, timeout=300).returncode
        if words[0] == "python":
            raise AssertionError(f"the README runs a command this test does not know: {line}")
        self.bash(self.expand(line))
        return 0


@pytest.fixture
def readme(tmp_path, cache_dir, monkeypatch):
    """A scratch directory with the files the README's commands read, and the state that
    in-process Hydra runs leave behind restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(sys, "argv", sys.argv)
    # Hydra finds conf/ beside the script of a __main__ task function, as on the command line
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    works = list(shakespeare_works().values())
    (tmp_path / "tinyshakespeare.txt").write_text("".join(w.text for w in works[:3]))
    (tmp_path / "my").mkdir()
    (tmp_path / "my" / "book.txt").write_text(works[3].text)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "a.txt").write_text(works[4].text)
    rows = [{"text": line} for line in works[5].text.splitlines() if line.strip()]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gpt2_stand_ins(tmp_path, works[0].text[:50_000])
    root_handlers = list(logging.getLogger().handlers)
    yield Readme(tmp_path, cache_dir)
    logging.getLogger().handlers[:] = root_handlers
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
    torch.set_num_threads(DEFAULT_THREADS)


def gpt2_stand_ins(folder: Path, text: str) -> None:
    """GPT-2's files made here: its tokenizer's (vocab.json, merges.txt) of a BPE trained on
    text, in gpt2/ with a small GPT2LMHeadModel (what init_from=gpt2 and pretrained=gpt2 find
    as a local copy), and HellaSwag's validation file with a few items."""
    import transformers

    tokenizer = BPETokenizer.train(text, vocab_size=600)
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=1, n_head=2
    )
    transformers.GPT2LMHeadModel(config).save_pretrained(folder / "gpt2")
    tokenizer.save_gpt2_files(folder / "gpt2")
    items = [
        {"ctx": "To be, or not to be,", "endings": ["that is", "a b", "the end", "no"], "label": 0},
        {"ctx": "My lord, the king", "endings": ["is come", "x", "sleeps", "is dead"], "label": 3},
    ]
    (folder / "hellaswag_val.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))


def expected_status(line: str) -> int:
    """A GPU command on a machine without one stops with a one-line error (status 2)."""
    return 2 if "trainer=gpu" in line and not torch.cuda.is_available() else 0


def test_readme_commands_run_as_written(readme, capsys):
    lines = [c for c in readme_commands() if not skipped(c) and not any(s in c for s in SLOW)]
    assert len(lines) > 30
    for line in lines:
        start = time.perf_counter()
        status = readme.run(line)
        output = capsys.readouterr()
        if os.environ.get("README_TIMES"):
            with capsys.disabled():
                print(f"{time.perf_counter() - start:6.1f} s  {line[:90]}")
        assert status == expected_status(line), f"{line}\n{output.out[-2000:]}{output.err[-2000:]}"
        if status == 2:
            assert "no CUDA GPU" in output.err
        if line.startswith("python sample.py"):  # after a warning, if any (a busy machine)
            said = [s for s in output.err.splitlines() if not s.startswith("warning: ")]
            assert said[0].startswith("checkpoint: ")
        if line.startswith("python train.py") and status == 0 and " -m " not in line:
            assert "run done" in output.out or "--cfg" in line, f"{line}\n{output.out}"
    runs = [p.parent for p in Path("outputs").rglob("metrics.json")]
    assert len(runs) >= 20
    # what ran smaller than written, said where the suite's summary shows it
    changed = {line: values for line, values in readme.changed.items() if values}
    assert changed
    with capsys.disabled():
        print(f"\nREADME lines run with values other than their own ({len(changed)}):")
        for line, values in changed.items():
            print(f"  {line[:70]}\n      {'; '.join(values)}")


def test_commands_for_other_machines_compose(readme, capsys):
    """The `sh` blocks (a cluster, a GPU machine) are not run here, but every train.py
    line in them composes: its arguments (a sweep's first job), with --cfg job."""
    lines = [line for line in readme_commands("sh") if "train.py" in line]
    assert len(lines) >= 5
    for line in lines:
        words = shlex.split(line.replace("$", ""), comments=True)
        args = words[words.index("train.py") + 1 :]
        if "-m" in args:  # a sweep composes as its first job
            args = [re.sub(r"=([^,\[]*),.*", r"=\1", a) for a in args if a != "-m"]
        status = call(train_script.cli, ["train.py", *args, "--cfg", "job"])
        assert status == 0, f"{line}\n{capsys.readouterr().err[-2000:]}"


@pytest.mark.slow
def test_readme_slow_commands_run_as_written(readme, monkeypatch):
    """The NumPy proofs, and the sweep submitted to SLURM (tests/fake_slurm stands in)."""
    path = [str(ROOT / "tests" / "fake_slurm"), os.path.dirname(sys.executable), os.environ["PATH"]]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    monkeypatch.setenv("FAKE_SLURM_RECORD", str(readme.cwd / "sbatch.sh"))
    monkeypatch.setenv("FAKE_SLURM_DIR", str(readme.cwd / "slurm"))
    lines = [c for c in readme_commands() if any(s in c for s in SLOW)]
    # the proofs twice (model.md, fundamentals.md), SLURM, the grid, the IsoFLOP study (3)
    assert len(lines) == 7
    for line in lines:
        assert readme.run(line) == 0, line


def test_every_link_between_the_pages_resolves():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"
