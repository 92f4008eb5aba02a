"""A real ``objvault serve`` subprocess on loopback, for tests and benchmarks."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

OBJVAULT = str(Path(sys.executable).parent / "objvault")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """One ``objvault serve`` process with its own data dir and port."""

    def __init__(self, root: Path, config: str | None = None, env: dict | None = None,
                 data_dirs: list[Path] | None = None, admin_token: str = "test-admin-token") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dirs = data_dirs or [self.root / "data"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.s3_port = free_port()
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.admin_token = admin_token
        self.config_path = None
        if config is not None:
            self.config_path = self.root / "objvault.toml"
            self.config_path.write_text(config)
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "server.log"
        self._clients: list[httpx.Client] = []
        self._admin: httpx.Client | None = None

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBJVAULT_")}
        env.update({
            "OBJVAULT_LISTEN": f"127.0.0.1:{self.port}",
            "OBJVAULT_S3_LISTEN": f"127.0.0.1:{self.s3_port}",
            "OBJVAULT_DATA_DIRS": ",".join(str(d) for d in self.data_dirs),
            "OBJVAULT_ADMIN_TOKEN": self.admin_token,
            "OBJVAULT_LOG_LEVEL": "info",
            # Segments are preallocated: keep them small so many test servers fit on one disk.
            "OBJVAULT_SEGMENT_BYTES": str(64 << 20),
        })
        if self.config_path:
            env["OBJVAULT_CONFIG"] = str(self.config_path)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30) -> "Server":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([OBJVAULT, "serve"], env=self.env(), stdout=log, stderr=log,
                                     cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1, verify=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become ready:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> "Server":
        self.stop()
        return self.start()

    def client(self, secret: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret or self.admin_token}"}
        # verify=False: plain HTTP on loopback; building an SSL context costs ~0.1 s per client.
        kw.setdefault("verify", False)
        c = httpx.Client(base_url=self.url, headers=headers, timeout=kw.pop("timeout", 60), **kw)
        self._clients.append(c)
        return c

    @property
    def admin(self) -> httpx.Client:
        """One admin client per server (re-made after a restart)."""
        if self._admin is None or self._admin.is_closed:
            self._admin = self.client()
        return self._admin

    def create_vault(self, name: str, **fields) -> dict:
        r = self.admin.post("/v1/vaults", json={"name": name, **fields})
        assert r.status_code == 201, r.text
        return r.json()

    def create_key(self, vault: str, role: str = "full") -> str:
        r = self.admin.post(f"/v1/vaults/{vault}/keys", json={"role": role})
        assert r.status_code == 201, r.text
        return r.json()["secret"]

    def put_chunk(self, client: httpx.Client, vault: str, data: bytes) -> str:
        cid = sha(data)
        r = client.put(f"/v1/vaults/{vault}/chunks/{cid}", content=data)
        assert r.status_code in (200, 201), r.text
        return cid
