"""A real single-node Ray cluster on loopback, for the tests and the benchmark of ``score --ray``.

``ray start --head --block`` runs in its own process group on 127.0.0.2 (Ray replaces
127.0.0.1 with the interface address), with token authentication on and a token of its own
(``RAY_AUTH_TOKEN_PATH``, so ``~/.ray`` is left alone), and this source tree on the workers'
``PYTHONPATH``. Stopping it signals that process (then its process group) only: never
``ray stop``, which stops every Ray process of the machine.

    with LocalCluster(cpus=2) as cluster:
        subprocess.run([..., "--ray", cluster.address], env=cluster.env)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_IP = "127.0.0.2"


def free_port(host: str = NODE_IP) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalCluster:
    """``env`` is what a driver needs to join (token auth, this tree on PYTHONPATH)."""

    def __init__(self, cpus: int = 2, object_store_mb: int = 100) -> None:
        self.cpus = cpus
        self.object_store_mb = object_store_mb
        self.folder = Path(tempfile.mkdtemp(prefix="efray"))  # short: Unix socket paths are
        self.port = free_port()  # limited to 107 bytes
        self.address = f"{NODE_IP}:{self.port}"
        token = self.folder / "auth_token"
        self.env_token = secrets.token_hex(32)
        token.write_text(self.env_token)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                os.environ.get("PYTHONPATH")]))}
        self.env.pop("RAY_ADDRESS", None)
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LocalCluster:
        try:
            return self._start()
        except RuntimeError:  # on an overloaded machine the head's first RPCs can time out
            self.folder.mkdir(exist_ok=True)
            (self.folder / "auth_token").write_text(self.env_token)
            return self._start()

    def _start(self) -> LocalCluster:
        log = (self.folder / "head.log").open("wb")
        command = [shutil.which("ray") or "ray", "start", "--head", "--block",
                   f"--node-ip-address={NODE_IP}", f"--port={self.port}", f"--num-cpus={self.cpus}",
                   f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
                   "--include-dashboard=false", "--disable-usage-stats",
                   f"--temp-dir={self.folder / 'ray'}"]
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env, start_new_session=True)
        deadline = time.monotonic() + 180
        while b"Ray runtime started" not in (self.folder / "head.log").read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log_text = (self.folder / "head.log").read_text()[-3000:]
                self.stop()
                raise RuntimeError("ray start failed:\n" + log_text)
            time.sleep(0.2)
        return self

    def worker_pids(self, title: str) -> list[int]:
        """Processes of this cluster whose title starts with ``title`` (Ray names an actor's
        process ``ray::Class.method`` while it runs a method)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(title) and str(self.folder).encode() in environ:
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # ``ray start --block`` then stops what it started
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):  # stragglers of its process group
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.stop()
