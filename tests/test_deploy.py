"""Deployment files: the example and compose configs through the real loader,
the systemd unit's sandbox, the Dockerfile, and a smoke test of ``objvault
serve`` started the way the example config and the Docker image start it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.server import OBJVAULT, free_port
from vault.config import (AlertsConfig, CometConfig, Config, GCConfig, S3Config, ScrubConfig, TargetConfig,
                          WebhookConfig, apply_toml, load_config)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
EXAMPLE = DEPLOY / "objvault.example.toml"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_TOML = DEPLOY / "compose.objvault.toml"
UNIT = DEPLOY / "objvault.service"
DOCKERFILE = DEPLOY / "Dockerfile"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    logical: list[str] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    out: list[tuple[str, str]] = []
    for line in logical:
        instr, _, args = line.strip().partition(" ")
        if instr.upper() == "FROM":
            out = []  # keep only the last (runtime) stage
        out.append((instr.upper(), args.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in dockerfile_instructions():
        if instr == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_healthcheck() -> list[str]:
    for instr, args in dockerfile_instructions():
        if instr == "HEALTHCHECK":
            cmd = args[args.index("CMD") + len("CMD"):].strip()
            return json.loads(cmd)
    raise AssertionError("Dockerfile has no HEALTHCHECK")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd unit → {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: key outside a section: {line!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def uncommented_targets(text: str) -> str:
    """The commented-out [[replication.targets]] examples, uncommented."""
    blocks, block = [], None
    for line in text.splitlines():
        if line.startswith("# [[replication.targets]]"):
            block = [line[2:]]
            blocks.append(block)
        elif block is not None and re.match(r"^# [a-z_]+ = ", line):
            block.append(line[2:])
        else:
            block = None
    return "\n\n".join("\n".join(b) for b in blocks)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# --------------------------------------------------------------------------
# example config
# --------------------------------------------------------------------------


def test_example_config_loads_with_documented_defaults():
    cfg = load_config(EXAMPLE, env={})
    assert cfg.listen == "127.0.0.1:8470"
    assert cfg.data_dirs == ["./objvault-data"]
    assert cfg.admin_token == ""
    assert cfg.max_chunk_bytes == 134217728
    assert (cfg.tls_cert_file, cfg.tls_key_file) == ("", "")
    assert cfg.log_level == "info"
    assert cfg.segment_bytes == 1073741824
    assert cfg.stream_threshold_bytes == 8388608
    assert cfg.gc == GCConfig(grace_seconds=86400, interval_seconds=3600,
                              compact_threshold=0.5, compact_rate_bytes_per_second=209715200)
    assert cfg.scrub == ScrubConfig(interval_seconds=604800, rate_bytes_per_second=52428800)
    [t] = cfg.replication_targets
    assert t == TargetConfig(
        name="offsite", kind="s3", url="s3://bucket/prefix", endpoint="https://s3.example.com",
        region="us-east-1", access_key_id="", secret_access_key="", token="", encryption_key_file="",
        delete_delay_seconds=604800, concurrency=8, vaults=["*"], checkpoint_interval_seconds=86400)
    # Everything the example sets equals the embedded default: copying it
    # changes nothing but what the operator edits.
    defaults = Config()
    for f in dataclasses.fields(Config):
        if f.name != "replication_targets":
            assert getattr(cfg, f.name) == getattr(defaults, f.name), f.name
    assert t == dataclasses.replace(TargetConfig(), name=t.name, url=t.url, endpoint=t.endpoint)


def test_example_config_documents_every_key():
    text = EXAMPLE.read_text()
    present = set(re.findall(r"^(?:# )?([a-z_]+) = ", text, flags=re.M))
    for cls in (Config, GCConfig, ScrubConfig, S3Config, CometConfig, TargetConfig, AlertsConfig, WebhookConfig):
        for f in dataclasses.fields(cls):
            if f.name in ("gc", "scrub", "s3", "comet", "replication_targets", "alerts", "webhooks"):
                continue
            assert f.name in present, f"{cls.__name__}.{f.name} is not in {EXAMPLE.name}"
    for secret_file in ("admin_token_file", "access_key_id_file", "secret_access_key_file", "token_file"):
        assert secret_file in present, secret_file
    for section in ("[gc]", "[scrub]", "[s3]", "[comet]", "[[replication.targets]]", "[alerts]",
                    "# [[alerts.webhooks]]"):
        assert re.search(rf"^{re.escape(section)}$", text, flags=re.M), section
    for kind in ('"s3"', '"objvault"', '"local"', "file:///"):
        assert kind in text


def test_example_config_commented_targets_load(tmp_path):
    """The commented alternatives (objvault peer, local dir, S3 with key files) are valid too."""
    extra = uncommented_targets(EXAMPLE.read_text())
    # Their secret files live under /etc/objvault: point them at real files here.
    secrets = tmp_path / "etc"
    secrets.mkdir()
    for name in set(re.findall(r'"/etc/objvault/([^"]+)"', extra)):
        (secrets / name).write_text(f"secret-of-{name}\n")
    extra = extra.replace('"/etc/objvault/', f'"{secrets}/')
    cfg = Config()
    apply_toml(cfg, tomllib.loads(extra))
    kinds = {t.name: t.kind for t in cfg.replication_targets}
    assert kinds == {"site-b": "objvault", "nas": "local", "wasabi": "s3"}
    by_name = {t.name: t for t in cfg.replication_targets}
    assert by_name["site-b"].token == "secret-of-site-b.token"
    assert by_name["wasabi"].access_key_id == "secret-of-wasabi.access-key-id"
    assert by_name["wasabi"].secret_access_key == "secret-of-wasabi.secret-access-key"
    assert by_name["nas"].url.startswith("file:///")
    # And the whole file with them uncommented still passes validation.
    path = tmp_path / "all.toml"
    path.write_text(EXAMPLE.read_text() + "\n" + extra + "\n")
    assert len(load_config(path, env={}).replication_targets) == 4


# --------------------------------------------------------------------------
# compose
# --------------------------------------------------------------------------


def test_compose_config_loads_and_points_at_seaweedfs():
    cfg = load_config(COMPOSE_TOML, env={})
    assert cfg.listen == "0.0.0.0:8470"
    assert cfg.data_dirs == ["/data"]
    [t] = cfg.replication_targets
    assert (t.name, t.kind, t.endpoint) == ("offsite", "s3", "http://seaweedfs:8333")
    assert t.url.startswith("s3://objvault-offsite/")
    assert t.access_key_id and t.secret_access_key
    # The Dockerfile's environment wins over the file; they agree anyway.
    env = {k: v for k, v in dockerfile_env().items() if k.startswith("OBJVAULT_")}
    assert load_config(COMPOSE_TOML, env=env).listen == cfg.listen
    assert load_config(COMPOSE_TOML, env=env).data_dirs == cfg.data_dirs


def test_compose_file_is_consistent():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) >= {"objvault", "seaweedfs", "seaweedfs-init"}

    ov = services["objvault"]
    assert (COMPOSE.parent / ov["build"]["context"] / ov["build"]["dockerfile"]).resolve() == DOCKERFILE
    mounts = {m.split(":")[1]: m.split(":")[0] for m in ov["volumes"]}
    config_path = ov["environment"]["OBJVAULT_CONFIG"]
    assert (COMPOSE.parent / mounts[config_path]).resolve() == COMPOSE_TOML
    assert mounts["/data"] == "objvault-data"
    assert ov["depends_on"]["seaweedfs-init"]["condition"] == "service_completed_successfully"
    assert ov["read_only"] is True and "/tmp" in ov["tmpfs"] and ov["cap_drop"] == ["ALL"]

    sw = services["seaweedfs"]
    assert sw["image"].startswith("chrislusf/seaweedfs:")
    assert sw["command"][0] == "server" and "-s3" in sw["command"]
    assert "-s3.port=8333" in sw["command"]
    s3_config = next(a.split("=", 1)[1] for a in sw["command"] if a.startswith("-s3.config="))
    sw_mounts = {m.split(":")[1]: m.split(":")[0] for m in sw["volumes"]}
    s3_json = json.loads((COMPOSE.parent / sw_mounts[s3_config]).read_text())
    keys = {(c["accessKey"], c["secretKey"]) for ident in s3_json["identities"]
            for c in ident.get("credentials", []) if "Write" in ident["actions"]}

    [t] = load_config(COMPOSE_TOML, env={}).replication_targets
    assert (t.access_key_id, t.secret_access_key) in keys
    bucket = t.url.removeprefix("s3://").split("/")[0]
    init = services["seaweedfs-init"]
    assert init["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
    assert f"s3.bucket.create -name {bucket}" in "".join(init["command"])
    assert "8333" in " ".join(sw["healthcheck"]["test"])


# --------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------


def test_systemd_unit_hardening():
    unit = parse_unit(UNIT)
    svc = unit["Service"]

    def one(key: str) -> str:
        assert key in svc, f"{key} missing from [Service]"
        return svc[key][-1]

    assert one("User") == "objvault"
    argv = one("ExecStart").split()
    assert Path(argv[0]).is_absolute() and Path(argv[0]).name == "objvault" and argv[1:] == ["serve"]
    assert "OBJVAULT_CONFIG=/etc/objvault/objvault.toml" in svc["Environment"]
    assert one("ProtectSystem") == "strict"
    assert one("NoNewPrivileges") == "yes"
    assert "/var/lib/objvault" in " ".join(svc["ReadWritePaths"]).split()
    assert one("PrivateTmp") == "yes"
    assert one("ProtectHome") == "yes"
    assert int(one("LimitNOFILE")) >= 65536
    assert one("Restart") == "on-failure"
    assert one("KillSignal") == "SIGTERM"
    assert int(one("TimeoutStopSec")) >= 30
    assert one("StateDirectory") == "objvault"
    assert one("CapabilityBoundingSet") == ""
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if not found:  # Debian's systemd package provides it
        subprocess.run(["apt-get", "install", "-y", "-qq", "systemd"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
        found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is required"
    return found


def test_systemd_unit_verifies_and_is_sandboxed(systemd_analyze, tmp_path):
    # The unit as installed, with ExecStart pointing at this checkout's objvault.
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={OBJVAULT}", UNIT.read_text(), flags=re.M)
    unit = tmp_path / "objvault.service"
    unit.write_text(text)
    verify = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip() and not verify.stdout.strip(), (
        verify.stdout + verify.stderr)
    # Exposure level 0 (locked down) .. 10 (unprotected); --threshold is in tenths.
    security = subprocess.run([systemd_analyze, "security", "--offline=yes", "--threshold=20", str(unit)],
                              capture_output=True, text=True, timeout=60)
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr


# --------------------------------------------------------------------------
# Dockerfile (no engine here: checked by reading)
# --------------------------------------------------------------------------


def test_dockerfile():
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms and all(f in ("${PYTHON_IMAGE}", "python:3.11-slim") for f in froms)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    final = dockerfile_instructions()
    kinds = [k for k, _ in final]
    env = dockerfile_env()
    assert env["OBJVAULT_DATA_DIRS"] == "/data"
    assert env["OBJVAULT_LISTEN"] == "0.0.0.0:8470"
    assert load_config(None, env=env).data_dirs == ["/data"]

    user = [a for k, a in final if k == "USER"][-1]
    uid = re.search(r"OBJVAULT_UID=(\d+)", text).group(1)
    assert uid == "10001" and user.split(":")[0] in ("10001", "${OBJVAULT_UID}")
    assert "--uid \"${OBJVAULT_UID}\"" in text and "chown objvault:objvault /data" in text
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    assert ("VOLUME", '["/data"]') in final
    assert ("EXPOSE", "8470") in final
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["objvault", "serve"]

    health = dockerfile_healthcheck()
    assert health[0] == "python" and "/healthz" in health[-1]
    assert "curl" not in text.split("HEALTHCHECK", 1)[1].split("\n\n")[0]

    # Everything the build copies exists in the build context (the repo root)
    # and is not excluded by the Dockerfile's ignore file.
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.M):
        assert (ROOT / src).exists(), src
        assert f"!{src.rstrip('/')}" in ignore or f"!{src.rstrip('/')}/" in ignore, src


# --------------------------------------------------------------------------
# smoke: a real server started as deployed
# --------------------------------------------------------------------------


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OBJVAULT_")}


def _example_config_env(tmp_path: Path, port: int) -> dict[str, str]:
    """The example config as shipped, with its placeholder S3 endpoint moved to
    a closed loopback port (an unreachable target) and data in tmp_path."""
    dead = free_port()
    text = EXAMPLE.read_text().replace('"https://s3.example.com"', f'"http://127.0.0.1:{dead}"')
    assert f"127.0.0.1:{dead}" in text
    config = tmp_path / "objvault.toml"
    config.write_text(text)
    return {**_base_env(), "OBJVAULT_CONFIG": str(config), "OBJVAULT_S3_LISTEN": f"127.0.0.1:{free_port()}",
            "OBJVAULT_LISTEN": f"127.0.0.1:{port}", "OBJVAULT_DATA_DIRS": str(tmp_path / "data")}


def _dockerfile_env(tmp_path: Path, port: int) -> dict[str, str]:
    """The image's environment, with /data and 0.0.0.0 swapped for tmp_path and loopback."""
    env = {k: v for k, v in dockerfile_env().items() if k != "PATH"}
    assert {"OBJVAULT_DATA_DIRS", "OBJVAULT_LISTEN"} <= set(env)
    env["OBJVAULT_DATA_DIRS"] = str(tmp_path / "data")
    env["OBJVAULT_LISTEN"] = f"127.0.0.1:{port}"
    env["OBJVAULT_S3_LISTEN"] = f"127.0.0.1:{free_port()}"
    return {**_base_env(), **env}


@pytest.mark.parametrize("how", ["example-config", "dockerfile-env"])
def test_serve_smoke(tmp_path, how):
    port = free_port()
    env = (_example_config_env if how == "example-config" else _dockerfile_env)(tmp_path, port)
    (tmp_path / "data").mkdir()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(OBJVAULT), "serve"], env=env, cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        status = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log_path.read_text()}"
            try:
                status = {p: http_status(base + p) for p in ("/healthz", "/readyz")}
            except OSError:
                status = {}
            if status == {"/healthz": 200, "/readyz": 200}:
                break
            time.sleep(0.1)
        assert status == {"/healthz": 200, "/readyz": 200}, f"{status}\n{log_path.read_text()}"

        if how == "dockerfile-env":
            # The image's HEALTHCHECK command, run by this interpreter, passes...
            cmd = [sys.executable] + dockerfile_healthcheck()[1:]
            ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=20)
            assert ok.returncode == 0, ok.stderr

        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within 30 s of SIGTERM:\n{log_path.read_text()}")
        assert code == 0, f"exit code {code} after SIGTERM:\n{log_path.read_text()}"

        if how == "dockerfile-env":
            # ...and fails once the server is gone.
            down = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=20)
            assert down.returncode != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
