"""A live ``aether serve`` in a subprocess on 127.0.0.1 (free port), waited for on /readyz, stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``python -m aether serve ROOT`` with the hashing model for new namespaces; logs go to ``log_path``."""

    def __init__(self, root: Path, *, model: str = "hashing:64", env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.model = model
        self.env = env or {}
        self.args = args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root.parent / f"{root.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> LiveServer:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **self.env}
        env.pop("AETHER_KEY", None)
        for _attempt in range(3):  # the free port can be taken between the probe and the bind
            self.port = free_port()
            cmd = [sys.executable, "-m", "aether", "serve", str(self.root), "--host", "127.0.0.1",
                   "--port", str(self.port), "--model", self.model, *self.args]
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=REPO)
            log.close()
            if self._wait_ready(timeout):
                return self
            self.kill()
        raise RuntimeError(f"server did not become ready; log:\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code (uvicorn re-raises the signal after a clean shutdown)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def clean_exit(code: int) -> bool:
    return code in (0, -signal.SIGTERM)
