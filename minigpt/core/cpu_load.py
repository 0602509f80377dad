"""How busy the machine's CPUs are with other processes, measured over this process's own
start-up (Linux's /proc/stat; elsewhere nothing is measured). Threads beyond the idle
cores do not add speed: they take turns with the other work, and every process slows down
many times over."""

from __future__ import annotations

import os
import time
from typing import NamedTuple

# /proc/stat's first line: user nice system idle iowait irq softirq steal (guest time is
# already counted in user)
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


class Snapshot(NamedTuple):
    wall: float  # seconds, monotonic
    machine_busy: float  # CPU seconds all processes have run since boot
    own: float  # CPU seconds this process and its finished children have run
    cpus: int


def snapshot() -> Snapshot | None:
    """The machine's and this process's CPU time now; None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as stat:
            lines = stat.read().splitlines()
    except OSError:
        return None
    ticks = [int(x) for x in lines[0].split()[1:]]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3].isdigit())
    busy = sum(ticks[i] for i in _BUSY_FIELDS if i < len(ticks)) / os.sysconf("SC_CLK_TCK")
    t = os.times()  # children: the tokenizing workers, once they have ended
    return Snapshot(
        time.monotonic(), busy, t.user + t.system + t.children_user + t.children_system, cpus
    )


def busy_elsewhere(since: Snapshot | None, siblings: int = 0) -> tuple[float, int] | None:
    """(CPUs kept busy by other processes since `since`, the machine's CPUs), or None when
    nothing can be measured: no /proc/stat, a window under a quarter of a second, or over a
    minute (a long-lived process, such as a test session or a notebook: what was busy then
    says little about now). `siblings`:
    processes of this same run on this machine started with it (torchrun's other ranks),
    whose use is taken as equal to this process's and not counted as other work."""
    now = snapshot()
    if since is None or now is None or not 0.25 <= now.wall - since.wall <= 60.0:
        return None
    seconds = now.wall - since.wall
    own = (now.own - since.own) / seconds
    machine = (now.machine_busy - since.machine_busy) / seconds
    return max(0.0, machine - own * (1 + siblings)), now.cpus


def oversubscription(threads: int, processes: int, since: Snapshot | None) -> str | None:
    """A notice when the CPUs other processes keep busy leave fewer idle than this run's
    threads (threads per process x its processes on this machine), saying what to do; else
    None. A busy machine is one whose other work fills half a CPU or more."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    measured = busy_elsewhere(since, siblings=local - 1)
    if measured is None:
        return None
    others, cpus = measured
    wanted = threads * processes
    if others < 0.5 or others + wanted <= cpus + 0.25:
        return None
    fits = max(1, int(cpus - others + 0.25) // processes)
    advice = (
        f"threads={fits} makes it share less"
        if fits < threads
        else "wait for the other work to end, or move this run"
    )
    return (
        f"the machine is busy: other processes keep {others:.1f} of its {cpus} CPUs busy and "
        f"this wants {wanted} thread{'s' if wanted > 1 else ''}, so it may run several times "
        f"slower: {advice}"
    )
