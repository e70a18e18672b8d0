"""Running one child of the benchmark and what that run measured.

`Spawner` drives one `bench/spawner.py` helper process, which starts the children one
at a time (use one Spawner per concurrent pipe); `Spawner.run` returns a `Run` with
the wall time, the CPU time and the peak RSS that os.wait4 reported for the child.
"""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from pathlib import Path

SPAWNER = Path(__file__).resolve().with_name("spawner.py")


class Run:
    __slots__ = ("wall", "cpu", "user", "sys", "maxrss_kb", "code", "stderr", "start", "end", "web",
                 "replies", "reply_bytes", "outcome")

    def __init__(self, **values):
        self.web = 0.0
        self.replies, self.reply_bytes, self.outcome = 0, 0, ""
        for key, value in values.items():
            setattr(self, key, value)


class Spawner:
    """One helper process that runs children one at a time (use one per concurrent pipe)."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.process = subprocess.Popen([sys.executable, "-I", "-S", str(SPAWNER)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.counter = 0

    def run(self, argv: list[str], data: bytes, env: dict) -> Run:
        self.counter += 1
        stem = self.scratch / f"{self.process.pid}-{self.counter}"
        paths = {"stdin": f"{stem}.in", "stdout": f"{stem}.out", "stderr": f"{stem}.err"}
        Path(paths["stdin"]).write_bytes(data)
        job = marshal.dumps({"argv": list(argv), "env": dict(env), **paths})
        self.process.stdin.write(len(job).to_bytes(4, "big") + job)
        self.process.stdin.flush()
        head = self.process.stdout.read(4)
        if len(head) != 4:
            raise RuntimeError("the spawner helper died")
        answer = marshal.loads(self.process.stdout.read(int.from_bytes(head, "big")))
        stderr = Path(paths["stderr"]).read_bytes().decode("utf-8", "replace").strip()
        for path in paths.values():
            os.unlink(path)
        if "error" in answer:
            raise RuntimeError(f"cannot start {argv[0]}: {answer['error']}")
        return Run(wall=answer["end"] - answer["start"], cpu=answer["user"] + answer["sys"],
                   user=answer["user"], sys=answer["sys"], maxrss_kb=answer["maxrss_kb"],
                   code=answer["code"], stderr=stderr, start=answer["start"], end=answer["end"])

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
