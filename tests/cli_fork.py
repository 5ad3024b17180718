"""`calreport` commands in processes of their own, without an interpreter start each.

Tests whose point is that a command ends (a FIFO or /dev/zero where a file of record should be) need
the process boundary: a hang is killed at a timeout instead of hanging the test run. What they do not
need is a fresh interpreter importing numpy, pyarrow and the CLI every time (~1 s each). A zygote
process imports the CLI and every calreport module once; each command is a fork of it (single-threaded, so forking is safe) with
its own stdin (/dev/null), stdout and stderr, running `calreport/__main__.py`'s `SystemExit(main())`.

Tests of start-up itself (lazy imports, the import-time probes) keep starting real interpreters.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ZYGOTE = r"""
import importlib, json, os, pkgutil, sys, traceback
import calreport
from calreport.commands.cli import main
for mod in pkgutil.walk_packages(calreport.__path__, "calreport."):  # what the commands import lazily, once
    if not mod.name.endswith("__main__"):
        importlib.import_module(mod.name)
print("ready", flush=True)
while line := sys.stdin.readline():
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the command: a process of its own
        code = 70
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, path in ((1, req["out"]), (2, req["err"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
            os.chdir(req["cwd"])
            sys.argv = ["calreport", *req["argv"]]
            try:
                raise SystemExit(main(req["argv"]))
            except SystemExit as exc:  # what the interpreter makes of `raise SystemExit(main())`
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()  # an uncaught exception: a traceback and exit status 1, as python -m prints
                code = 1
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    print(pid, flush=True)
    sys.stdin.readline()  # "reap": the command ended, or the test killed it at its timeout
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@dataclass
class Done:
    """What subprocess.run would have returned (the fields the tests read)."""

    returncode: int
    stdout: str
    stderr: str


class CalreportForks:
    """One zygote per test process; `run(argv)` is `python -m calreport *argv` in a fork of it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "zygote.err"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no BLAS threads to fork
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
        with self.log.open("w") as err:
            self.p = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=err, text=True, env=env)
        assert self._line(60) == "ready", self.log.read_text()
        self.n = 0

    def _line(self, timeout: float) -> str | None:
        assert self.p.stdout is not None
        ready, _, _ = select.select([self.p.stdout], [], [], timeout)
        return self.p.stdout.readline().strip() if ready else None

    def _send(self, text: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def run(self, argv: list[str], *, timeout: float = 30.0, cwd: Path | None = None) -> Done:
        """Run one command; a command still running after `timeout` seconds is killed and the test fails."""
        self.n += 1
        out, err = self.workdir / f"{self.n}.out", self.workdir / f"{self.n}.err"
        self._send(json.dumps({"argv": [str(a) for a in argv], "out": str(out), "err": str(err), "cwd": str(cwd or self.workdir)}))
        pid = int(self._line(60) or "0")
        assert pid > 0, self.log.read_text()
        # the zygote answers only after "reap": wait for the fork's end by polling its /proc entry
        ended = _wait_for_exit(pid, timeout)
        if not ended:
            os.kill(pid, signal.SIGKILL)
        self._send("reap")
        code = int(self._line(60) or "-999")
        if not ended:
            raise TimeoutError(f"calreport {' '.join(map(str, argv))} still running after {timeout} s (killed)")
        return Done(code, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.close()  # the zygote ends at the end of its input
        self.p.wait(timeout=60)
        self.p.stdout.close()


def _wait_for_exit(pid: int, timeout: float) -> bool:
    """True once `pid` has exited (a zombie waiting for its parent counts), False after `timeout` s."""
    import time

    end = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
