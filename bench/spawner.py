"""Start the benchmark's children one at a time and measure each with os.wait4.

    python -I -S bench/spawner.py

Linux reports as a child's peak RSS at least the peak RSS of the process that forked
it (exec records the old address space's high-water mark), so the benchmark, whose
memory grows with the mails and the in-process website, does not start its children
itself: this program does, and it imports only modules built into the interpreter, so
that it stays smaller than any Python child it starts.

Protocol, on stdin and stdout, each message a 4-byte big-endian length and a marshal
dump.  A job is {"argv": [...], "env": {...}, "stdin": PATH, "stdout": PATH,
"stderr": PATH}: the child is started with posix_spawn (SIGPIPE and SIGXFSZ back to
their defaults), fed the file at "stdin" through a pipe in 64 KB chunks, its stdout
and stderr written to those files, and reaped with os.wait4.  The answer is
{"start", "end": time.monotonic() at spawn and at reaping, "code": its exit code,
"user", "sys": its CPU seconds, "maxrss_kb": its peak RSS} or {"error": TEXT} when
it could not be started.  End of stdin ends the program.
"""

import _signal
import _thread
import marshal
import os
import time


def read_exactly(n):
    chunks = []
    while n:
        chunk = os.read(0, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def feed(path, fd, done):
    try:
        source = os.open(path, os.O_RDONLY)
        try:
            while True:
                chunk = os.read(source, 65536)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        finally:
            os.close(source)
    except OSError:
        pass                        # the child stopped reading: its exit code tells
    finally:
        os.close(fd)
        done.release()


def run(job):
    rd, wr = os.pipe()
    out = os.open(job["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    actions = [(os.POSIX_SPAWN_DUP2, rd, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
    done = _thread.allocate_lock()
    done.acquire()
    start = time.monotonic()
    try:
        pid = os.posix_spawn(job["argv"][0], job["argv"], job["env"], file_actions=actions,
                             setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
    except OSError as error:
        for fd in (rd, wr, out, err):
            os.close(fd)
        return {"error": str(error)}
    for fd in (rd, out, err):
        os.close(fd)
    _thread.start_new_thread(feed, (job["stdin"], wr, done))
    _, status, usage = os.wait4(pid, 0)
    end = time.monotonic()
    done.acquire()
    return {"start": start, "end": end, "code": os.waitstatus_to_exitcode(status),
            "user": usage.ru_utime, "sys": usage.ru_stime, "maxrss_kb": usage.ru_maxrss}


def main():
    while True:
        head = read_exactly(4)
        if head is None:
            break
        data = marshal.dumps(run(marshal.loads(read_exactly(int.from_bytes(head, "big")))))
        os.write(1, len(data).to_bytes(4, "big") + data)


if __name__ == "__main__":
    main()
