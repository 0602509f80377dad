"""The busy-machine notice: other processes' CPU use measured over this process's start-up,
and the thread count that would fit beside them."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from minigpt.core import cpu_load
from minigpt.core.cpu_load import Snapshot, busy_elsewhere, oversubscription, snapshot

linux = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="no /proc/stat")


@linux
def test_another_busy_process_is_measured_and_this_ones_own_use_is_not():
    since = snapshot()
    end = time.monotonic() + 0.6
    while time.monotonic() < end:  # this process busy: not another's work
        pass
    alone = busy_elsewhere(since)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the spinner's start-up
        since = snapshot()
        time.sleep(1.0)
        busy, cpus = busy_elsewhere(since)
    finally:
        spinner.kill()
    assert alone[0] < 0.5
    assert cpus >= 1 and 0.7 < busy < 1.5


def fake_clock(monkeypatch, now: Snapshot):
    monkeypatch.setattr(cpu_load, "snapshot", lambda: now)


def test_the_notice_names_the_threads_that_fit_beside_the_other_work(monkeypatch):
    since = Snapshot(wall=0.0, machine_busy=0.0, own=0.0, cpus=4)
    # over 1 s the machine ran 3 CPU seconds, 0.5 of them this process's: 2.5 CPUs elsewhere
    fake_clock(monkeypatch, Snapshot(wall=1.0, machine_busy=3.0, own=0.5, cpus=4))
    assert busy_elsewhere(since) == (2.5, 4)
    notice = oversubscription(threads=4, processes=1, since=since)
    assert "keep 2.5 of its 4 CPUs busy" in notice and "threads=1 makes" in notice
    assert oversubscription(threads=1, processes=1, since=since) is None
    assert "threads=1" in oversubscription(threads=2, processes=2, since=since)
    assert oversubscription(threads=2, processes=1, since=since) is not None
    # torchrun's other rank on this machine is this run's work, not another's
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert busy_elsewhere(since, siblings=1) == (2.0, 4)
    assert oversubscription(threads=2, processes=1, since=since) is None
    # a quiet machine, and a window too short to measure, say nothing
    fake_clock(monkeypatch, Snapshot(wall=1.0, machine_busy=0.9, own=0.5, cpus=4))
    assert oversubscription(threads=4, processes=1, since=since) is None
    fake_clock(monkeypatch, Snapshot(wall=0.1, machine_busy=3.0, own=0.0, cpus=4))
    assert oversubscription(threads=4, processes=1, since=since) is None
    # nor a window of over a minute: a long-lived process (tests, a notebook)
    fake_clock(monkeypatch, Snapshot(wall=61.0, machine_busy=183.0, own=30.0, cpus=4))
    assert oversubscription(threads=4, processes=1, since=since) is None
