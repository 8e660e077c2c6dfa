"""Processes the harness starts: each has a name, a log file and a pid, and is stopped by pid
(its whole process group: pilot-agent and the Envoy it starts, never anything else)."""

import os
import signal
import subprocess
import time
from pathlib import Path


class MeshError(RuntimeError):
    """A component failed: the message names it and its log."""


def tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class Proc:
    def __init__(self, name, argv, log, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = Path(log)
        self.env = env
        self.cwd = cwd
        self.popen = None

    def start(self):
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        try:
            # Own session: the whole process group can be stopped without touching anything else.
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.env, cwd=self.cwd, start_new_session=True)
        finally:
            out.close()
        return self

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def check(self):
        """Raises MeshError naming the component and its log if it has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise MeshError(f"{self.name} exited with code {self.popen.returncode}; log: {self.log}\n"
                            f"---- last lines of {self.log} ----\n{tail(self.log)}")

    def signal(self, sig):
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout=20):
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(timeout=10)
        # Children that outlived their parent (e.g. Envoy after pilot-agent) share its group.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self):
        """SIGKILL the whole group at once (a crash, for fault tests)."""
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)


def wait_for(what, predicate, timeout, procs=(), interval=0.25):
    """Polls `predicate` until it returns a true value; fails early, naming the component, if one
    of `procs` exits; fails with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            p.check()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = ", ".join(f"{p.name}: {p.log}" for p in procs) or "-"
            raise MeshError(f"timed out after {timeout:.0f} s waiting for {what} (logs: {logs})")
        time.sleep(interval)


def run(argv, what, timeout=120, **kw):
    """Runs a short command; on failure raises MeshError with its output."""
    argv = [str(a) for a in argv]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise MeshError(f"{what} failed (exit {r.returncode}): {' '.join(argv)}\n"
                        f"{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return r.stdout
