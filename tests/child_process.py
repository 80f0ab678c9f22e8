"""A training child process (``crash_child.py``) driven by a test: its stdout read line by line, waits that
fail with its stderr, and a generous timeout (the machine is shared; tests never assert on time)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).resolve().parent / "crash_child.py"
WAIT_S = 300  # generous: the machine is shared; the test never asserts on time


class Child:
    def __init__(self, root: Path, mode: str, *args: str):
        self.root = root
        self.lines: list[str] = []
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / f"child-{mode}-{len(list(root.glob('child-*.log')))}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), mode, str(root), *args],
            stdout=subprocess.PIPE,
            stderr=open(self.log, "w"),  # noqa: SIM115 (closed with the process)
            text=True,
            cwd=root,
        )
        self.reader = threading.Thread(target=self._read_lines, daemon=True)
        self.reader.start()

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"child exited ({self.proc.returncode}) before {what}:\n{self.stderr()}")
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"timed out waiting for {what}")

    def steps_seen(self) -> int:
        steps = [int(line.split()[1]) for line in self.lines if line.startswith("STEP ")]
        return max(steps, default=0)

    def finish(self) -> int:
        try:
            rc = self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self.reader.join(10)
        return rc

    def stderr(self) -> str:
        return self.log.read_text()[-4000:]
