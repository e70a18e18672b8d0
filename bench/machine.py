"""What the benchmark runs on: the machine, the commit, the installed command, and
whether other work on the machine disturbed a measurement.

`Watch` compares the CPU time the whole machine used (/proc/stat) with what the
benchmark's own children (as os.wait4 reported it) and process used: the rest is
other work, which inflates wall times, and, under concurrent pipes, throughput.
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOREIGN_CORES_WARNING = 0.10       # other work above this share of a core makes a run suspect


# --------------------------------------------------------------------------- the installed command

def find_pipe() -> Path:
    """The installed torokiki-pipe: beside this Python, in the repo's venv, or on PATH."""
    for candidate in (Path(sys.executable).parent / "torokiki-pipe", REPO / ".venv" / "bin" / "torokiki-pipe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("torokiki-pipe")
    if found:
        return Path(found)
    sys.exit("bench: torokiki-pipe is not installed: run `make install`")


def interpreter_of(script: Path) -> str:
    """The Python the console script runs with (its #! line), for the floor."""
    try:
        with open(script, "rb") as stream:
            first = stream.readline().decode("utf-8", "replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!"):
        words = shlex.split(first[2:])
        if words and "python" in os.path.basename(words[0]) and os.path.isabs(words[0]):
            return words[0]
    return sys.executable


def pipe_version(pipe: Path, env: dict) -> str | None:
    try:
        done = subprocess.run([str(pipe), "--version"], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout or done.stderr).strip() or None


# --------------------------------------------------------------------------- facts for the JSON

def machine(python: str) -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except (OSError, ValueError):
        pass
    try:
        pipe_python = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pipe_python = ""
    return {
        "nproc": cores(), "cpu_count": os.cpu_count(), "cpu_model": model or platform.processor(),
        "memory_mb": round(memory_kb / 1024) if memory_kb else None,
        "python": pipe_python or platform.python_version(), "python_executable": python,
        "platform": platform.platform(),
    }


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def git_info() -> dict:
    def git(*args):
        try:
            done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


# --------------------------------------------------------------------------- is the machine ours?

def _machine_busy_seconds() -> float | None:
    """CPU time every task of the machine used since boot (/proc/stat), in seconds."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def self_cpu() -> float:
    """CPU seconds this process used so far."""
    times = os.times()
    return times.user + times.system


class Watch:
    """How much CPU the rest of the machine took while we measured.

    Busy time of the whole machine (/proc/stat) minus what our children (wait4) and this
    process used: anything left is other work (another test suite, a package manager...),
    which inflates wall times and, under 8 concurrent pipes, throughput.
    """

    def __init__(self, nproc: int):
        self.nproc = nproc
        self.own = 0.0
        self.start = time.monotonic()
        self.busy = _machine_busy_seconds()
        self.self_cpu = self_cpu()
        self.load_before = _loadavg()

    def add(self, run) -> None:
        """Count a children.Run as our own work."""
        self.own += run.cpu

    def result(self, phase: str) -> dict:
        elapsed = time.monotonic() - self.start
        busy = _machine_busy_seconds()
        own = self.own + (self_cpu() - self.self_cpu)
        found = {"seconds": elapsed, "own_cpu_s": own, "loadavg_1m_before": self.load_before,
                 "loadavg_1m_after": _loadavg()}
        if busy is not None and self.busy is not None and elapsed > 0:
            # Tick accounting rounds; the spawner helpers' own CPU is not counted as ours.
            foreign = max(0.0, (busy - self.busy) - own)
            found["machine_cpu_s"] = busy - self.busy
            found["foreign_cpu_s"] = foreign
            found["foreign_cores"] = foreign / elapsed
            if found["foreign_cores"] > FOREIGN_CORES_WARNING:
                found["warning"] = (f"other work used {found['foreign_cores']:.2f} of {self.nproc} cores "
                                    f"during the {phase}: the numbers are inflated; run again on a quiet "
                                    f"machine before comparing")
        elif (found["loadavg_1m_after"] or 0) > self.nproc:
            found["warning"] = (f"load average {found['loadavg_1m_after']:.1f} on {self.nproc} cores during "
                                f"the {phase}: run again on a quiet machine before comparing")
        return found


def wait_until_quiet(limit: float, nproc: int) -> None:
    """Wait (at most `limit` seconds) until the rest of the machine idles for 5 s."""
    deadline = time.monotonic() + limit
    while True:
        before, clock = _machine_busy_seconds(), time.monotonic()
        if before is None:
            return
        time.sleep(5)
        used = (_machine_busy_seconds() - before) / (time.monotonic() - clock)
        if used <= FOREIGN_CORES_WARNING:
            print(f"the machine is quiet ({used:.2f} of {nproc} cores busy)", flush=True)
            return
        if time.monotonic() >= deadline:
            print(f"still busy ({used:.2f} of {nproc} cores) after {limit:g} s: measuring anyway", flush=True)
            return
        print(f"waiting for a quiet machine: {used:.2f} of {nproc} cores busy", flush=True)
