"""Configuration (API.md, "Configuration"): defaults, TOML, environment, flags, secrets, errors."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
import pytest

from tests.server import OBJVAULT, free_port
from vault.config import ConfigError, load_config

API_EXAMPLE = '''
listen = "127.0.0.1:8470"            # OBJVAULT_LISTEN
data_dirs = ["./objvault-data"]      # OBJVAULT_DATA_DIRS=/d1,/d2 — RocksDB lives in the first
admin_token = ""                     # OBJVAULT_ADMIN_TOKEN; if empty, one is generated on first
                                     # start into <first data dir>/admin.token (mode 0600)
max_chunk_bytes = 134217728
tls_cert_file = ""                   # both set → HTTPS
tls_key_file = ""

[gc]
grace_seconds = 86400                # OBJVAULT_GC_GRACE_SECONDS
interval_seconds = 3600

[scrub]
interval_seconds = 604800
rate_bytes_per_second = 52428800

[[replication.targets]]
name = "offsite"
kind = "s3"                          # "s3" (any S3-compatible) | "objvault" (another server)
url = "s3://bucket/prefix"           # kind objvault: "https://peer:8470" — each vault goes to the
                                     # same-named vault there, created if missing
endpoint = "https://s3.example.com"  # S3 endpoint; empty = AWS
region = "us-east-1"
access_key_id = ""                   # or access_key_id_file
secret_access_key = ""               # or secret_access_key_file
token = ""                           # kind objvault: admin token of the other server (or token_file)
encryption_key_file = ""             # optional: 32-byte key; bodies and names opaque to the target
delete_delay_seconds = 604800        # deletions reach the target this much later
concurrency = 8
vaults = ["*"]                       # which vaults replicate here (glob patterns)
'''


@pytest.fixture
def toml(tmp_path):
    def write(text: str, name: str = "objvault.toml") -> str:
        p = tmp_path / name
        p.write_text(text)
        return str(p)
    return write


def test_defaults():
    cfg = load_config(env={})
    assert cfg.listen == "127.0.0.1:8470"
    assert cfg.data_dirs == ["./objvault-data"]
    assert cfg.admin_token == ""
    assert cfg.max_chunk_bytes == 134217728
    assert cfg.tls_cert_file == "" and cfg.tls_key_file == ""
    assert cfg.gc.grace_seconds == 86400
    assert cfg.gc.interval_seconds == 3600
    assert cfg.scrub.interval_seconds == 604800
    assert cfg.scrub.rate_bytes_per_second == 52428800
    assert cfg.replication_targets == []


def test_defaults_ignore_the_process_environment(monkeypatch):
    monkeypatch.setenv("OBJVAULT_LISTEN", "10.0.0.1:1")
    assert load_config(env={}).listen == "127.0.0.1:8470"


def test_api_md_example_is_accepted(toml):
    cfg = load_config(toml(API_EXAMPLE), env={})
    assert cfg.listen == "127.0.0.1:8470"
    assert cfg.gc.grace_seconds == 86400
    (t,) = cfg.replication_targets
    assert (t.name, t.kind, t.url, t.endpoint, t.region) == \
        ("offsite", "s3", "s3://bucket/prefix", "https://s3.example.com", "us-east-1")
    assert t.delete_delay_seconds == 604800 and t.concurrency == 8 and t.vaults == ["*"]


def test_toml_values(toml):
    path = toml('''
listen = "0.0.0.0:9000"
data_dirs = ["/srv/a", "/srv/b"]
admin_token = "tok"
max_chunk_bytes = 1048576
[gc]
grace_seconds = 60
interval_seconds = 120
[scrub]
interval_seconds = 0
rate_bytes_per_second = 1000
[[replication.targets]]
name = "peer"
kind = "objvault"
url = "https://peer:8470"
token = "peer-token"
vaults = ["prod-*", "x"]
[[replication.targets]]
name = "s3"
url = "s3://b/p"
''')
    cfg = load_config(path, env={})
    assert cfg.listen == "0.0.0.0:9000"
    assert cfg.data_dirs == ["/srv/a", "/srv/b"]
    assert cfg.admin_token == "tok"
    assert cfg.max_chunk_bytes == 1048576
    assert (cfg.gc.grace_seconds, cfg.gc.interval_seconds) == (60, 120)
    assert (cfg.scrub.interval_seconds, cfg.scrub.rate_bytes_per_second) == (0, 1000)
    assert [t.name for t in cfg.replication_targets] == ["peer", "s3"]
    assert cfg.replication_targets[0].token == "peer-token"
    assert cfg.replication_targets[0].vaults == ["prod-*", "x"]
    assert cfg.replication_targets[1].kind == "s3"


def test_config_from_objvault_config(toml):
    path = toml('listen = "127.0.0.1:1234"\n')
    assert load_config(env={"OBJVAULT_CONFIG": path}).listen == "127.0.0.1:1234"


def test_config_path_argument_beats_objvault_config(toml):
    a = toml('listen = "127.0.0.1:1111"\n', "a.toml")
    b = toml('listen = "127.0.0.1:2222"\n', "b.toml")
    assert load_config(a, env={"OBJVAULT_CONFIG": b}).listen == "127.0.0.1:1111"


@pytest.mark.parametrize("var,value,check", [
    ("OBJVAULT_LISTEN", "127.0.0.1:9999", lambda c: c.listen == "127.0.0.1:9999"),
    ("OBJVAULT_DATA_DIRS", "/d1,/d2", lambda c: c.data_dirs == ["/d1", "/d2"]),
    ("OBJVAULT_DATA_DIRS", "/only", lambda c: c.data_dirs == ["/only"]),
    ("OBJVAULT_ADMIN_TOKEN", "s3cret", lambda c: c.admin_token == "s3cret"),
    ("OBJVAULT_MAX_CHUNK_BYTES", "4096", lambda c: c.max_chunk_bytes == 4096),
    ("OBJVAULT_GC_GRACE_SECONDS", "5", lambda c: c.gc.grace_seconds == 5),
    ("OBJVAULT_GC_INTERVAL_SECONDS", "7", lambda c: c.gc.interval_seconds == 7),
    ("OBJVAULT_SCRUB_RATE_BYTES_PER_SECOND", "100", lambda c: c.scrub.rate_bytes_per_second == 100),
])
def test_env_overrides(var, value, check):
    assert check(load_config(env={var: value}))


def test_env_overrides_file(toml):
    path = toml('listen = "127.0.0.1:1000"\nadmin_token = "file"\n[gc]\ngrace_seconds = 10\n')
    cfg = load_config(path, env={"OBJVAULT_LISTEN": "127.0.0.1:2000", "OBJVAULT_GC_GRACE_SECONDS": "20"})
    assert cfg.listen == "127.0.0.1:2000"
    assert cfg.gc.grace_seconds == 20
    assert cfg.admin_token == "file"  # not overridden: the file's value stays


def test_precedence_flags_env_file(toml):
    path = toml('listen = "127.0.0.1:1000"\ndata_dirs = ["/file"]\nadmin_token = "file"\n')
    env = {"OBJVAULT_LISTEN": "127.0.0.1:2000", "OBJVAULT_DATA_DIRS": "/env", "OBJVAULT_ADMIN_TOKEN": "env"}
    cfg = load_config(path, env=env, overrides={"listen": "127.0.0.1:3000", "admin_token": None})
    assert cfg.listen == "127.0.0.1:3000"      # flag
    assert cfg.data_dirs == ["/env"]           # env
    assert cfg.admin_token == "env"            # env (flag unset)
    cfg = load_config(path, env={}, overrides={"data_dirs": "/x,/y"})
    assert cfg.data_dirs == ["/x", "/y"]
    assert cfg.listen == "127.0.0.1:1000"      # file


def test_admin_token_file(toml, tmp_path):
    secret = tmp_path / "admin.secret"
    secret.write_text("from-a-file\n")
    cfg = load_config(toml(f'admin_token_file = "{secret}"\n'), env={})
    assert cfg.admin_token == "from-a-file"
    cfg = load_config(env={"OBJVAULT_ADMIN_TOKEN_FILE": str(secret)})
    assert cfg.admin_token == "from-a-file"


def test_target_secret_files(toml, tmp_path):
    (tmp_path / "ak").write_text("AKID\n")
    (tmp_path / "sk").write_text("SECRET\n")
    (tmp_path / "tk").write_text("PEERTOKEN")
    path = toml(f'''
[[replication.targets]]
name = "s3"
url = "s3://b/p"
access_key_id_file = "{tmp_path / 'ak'}"
secret_access_key_file = "{tmp_path / 'sk'}"
[[replication.targets]]
name = "peer"
kind = "objvault"
url = "https://peer:8470"
token_file = "{tmp_path / 'tk'}"
''')
    s3, peer = load_config(path, env={}).replication_targets
    assert (s3.access_key_id, s3.secret_access_key) == ("AKID", "SECRET")
    assert peer.token == "PEERTOKEN"


def test_alerts_and_webhooks(toml, tmp_path):
    (tmp_path / "hk").write_text("HOOKSECRET\n")
    path = toml(f'''
[alerts]
quota_warn_percent = 80
stale_after_days = 2.5
[[alerts.webhooks]]
events = ["quota_full", "target_failing"]
url = "https://ops.example/hook"
secret_file = "{tmp_path / 'hk'}"
[[alerts.webhooks]]
secret = "s"
url = "http://127.0.0.1:9000/"
''')
    alerts = load_config(path, env={"OBJVAULT_ALERTS_REPLICATION_BACKLOG_SECONDS": "600"}).alerts
    assert (alerts.quota_warn_percent, alerts.stale_after_days, alerts.replication_backlog_seconds) == (80, 2.5, 600)
    first, second = alerts.webhooks
    assert (first.secret, first.wants("quota_full"), first.wants("vault_stale")) == ("HOOKSECRET", True, False)
    assert second.events == ["*"] and second.wants("vault_stale")


def test_webhooks_from_files_and_the_environment(toml, tmp_path):
    """A webhook's URL and secret from files (a mounted Secret) or the environment:
    OBJVAULT_ALERTS_WEBHOOKS_<N>_<KEY> changes webhook N of the file, or adds the next one."""
    (tmp_path / "url").write_text("https://hooks.example/T0/B1/tok3n\n")
    (tmp_path / "sig").write_text("from-a-file\n")
    path = toml(f'''
[[alerts.webhooks]]
url_file = "{tmp_path / 'url'}"
secret_file = "{tmp_path / 'sig'}"
''')
    hooks = load_config(path, env={}).alerts.webhooks
    assert [(h.url, h.secret) for h in hooks] == [("https://hooks.example/T0/B1/tok3n", "from-a-file")]
    env = {"OBJVAULT_ALERTS_WEBHOOKS_0_SECRET": "from-env", "OBJVAULT_ALERTS_WEBHOOKS_0_EVENTS": "quota_full",
           "OBJVAULT_ALERTS_WEBHOOKS_1_URL_FILE": str(tmp_path / "url"),
           "OBJVAULT_ALERTS_WEBHOOKS_1_SECRET_FILE": str(tmp_path / "sig")}
    first, second = load_config(path, env=env).alerts.webhooks
    assert (first.url, first.secret, first.events) == ("https://hooks.example/T0/B1/tok3n", "from-env", ["quota_full"])
    assert (second.url, second.secret, second.events) == ("https://hooks.example/T0/B1/tok3n", "from-a-file", ["*"])
    only_env = load_config(None, env={"OBJVAULT_ALERTS_WEBHOOKS_0_URL": "http://127.0.0.1:9/h",
                                      "OBJVAULT_ALERTS_WEBHOOKS_0_SECRET": "s"}).alerts.webhooks
    assert [(h.url, h.secret) for h in only_env] == [("http://127.0.0.1:9/h", "s")]
    for bad, key in [({"OBJVAULT_ALERTS_WEBHOOKS_2_URL": "http://x"}, "without gaps"),
                     ({"OBJVAULT_ALERTS_WEBHOOKS_X_URL": "http://x"}, "OBJVAULT_ALERTS_WEBHOOKS_X_URL"),
                     ({"OBJVAULT_ALERTS_WEBHOOKS_0_COLOR": "red"}, "alerts.webhooks\\[0\\].color"),
                     ({"OBJVAULT_ALERTS_WEBHOOKS_0_URL_FILE": str(tmp_path / "nope")}, "url_file"),
                     ({"OBJVAULT_ALERTS_WEBHOOKS_0_URL": "http://x"}, "secret")]:
        with pytest.raises(ConfigError, match=key):
            load_config(None, env=bad)
    with pytest.raises(ConfigError, match="url_file"):  # only a webhook's URL is a secret
        load_config(toml(f'url_file = "{tmp_path / "url"}"\n'), env={})


def test_missing_secret_file_names_the_key(toml, tmp_path):
    with pytest.raises(ConfigError, match="admin_token_file"):
        load_config(toml(f'admin_token_file = "{tmp_path / "nope"}"\n'), env={})
    with pytest.raises(ConfigError, match="secret_access_key_file"):
        load_config(toml(f'''
[[replication.targets]]
name = "s3"
url = "s3://b/p"
secret_access_key_file = "{tmp_path / 'nope'}"
'''), env={})


@pytest.mark.parametrize("text,key", [
    ('listen = "no-port"\n', "listen"),
    ('listen = "127.0.0.1:99999"\n', "listen"),
    ('listen = 8470\n', "listen"),
    ('data_dirs = []\n', "data_dirs"),
    ('data_dirs = [1, 2]\n', "data_dirs"),
    ('data_dirs = ["/a", "/a"]\n', "data_dirs"),
    ('max_chunk_bytes = "lots"\n', "max_chunk_bytes"),
    ('max_chunk_bytes = 0\n', "max_chunk_bytes"),
    ('max_chunk_bytes = 1.5\n', "max_chunk_bytes"),
    ('max_chunk_bytes = true\n', "max_chunk_bytes"),
    ('admin_token = 5\n', "admin_token"),
    ('tls_cert_file = "/c.pem"\n', "tls_key_file"),
    ('[gc]\ngrace_seconds = -1\n', "grace_seconds"),
    ('[gc]\ngrace_seconds = "soon"\n', "grace_seconds"),
    ('[scrub]\nrate_bytes_per_second = -5\n', "rate_bytes_per_second"),
    ('gc = 5\n', "gc"),
    ('[[replication.targets]]\nurl = "s3://b"\n', "name"),
    ('[[replication.targets]]\nname = "x"\n', "url"),
    ('[[replication.targets]]\nname = "x"\nurl = "s3://b"\nkind = "ftp"\n', "kind"),
    ('[[replication.targets]]\nname = "x"\nurl = "s3://b"\nconcurrency = 0\n', "concurrency"),
    ('[[replication.targets]]\nname = "x"\nurl = "s3://b"\n[[replication.targets]]\nname = "x"\nurl = "s3://c"\n',
     "name"),
    ('[alerts]\nquota_warn_percent = 100\n', "quota_warn_percent"),
    ('[alerts]\nstale_after_days = 0\n', "stale_after_days"),
    ('[alerts]\ndata_dir_min_free_bytes = -1\n', "data_dir_min_free_bytes"),
    ('[[alerts.webhooks]]\nurl = "ftp://x"\nsecret = "s"\n', "alerts.webhooks[0].url"),
    ('[[alerts.webhooks]]\nurl = "https://x"\n', "alerts.webhooks[0].secret"),
    ('[[alerts.webhooks]]\nurl = "https://x"\nsecret = "s"\nevents = ["quota_ful"]\n', "events"),
    ('[alerts]\nwebhooks = 5\n', "alerts.webhooks"),
])
def test_bad_values_name_the_key(toml, text, key):
    with pytest.raises(ConfigError) as e:
        load_config(toml(text), env={})
    assert key in str(e.value)


@pytest.mark.parametrize("var,value,key", [
    ("OBJVAULT_LISTEN", "nonsense", "listen"),
    ("OBJVAULT_MAX_CHUNK_BYTES", "12abc", "max_chunk_bytes"),
    ("OBJVAULT_GC_GRACE_SECONDS", "abc", "grace_seconds"),
    ("OBJVAULT_GC_GRACE_SECONDS", "-3", "grace_seconds"),
    ("OBJVAULT_SCRUB_INTERVAL_SECONDS", "1.5", "interval_seconds"),
    ("OBJVAULT_DATA_DIRS", "", "data_dirs"),
    ("OBJVAULT_S3_CHUNK_BYTES", "65536", "s3.chunk_bytes"),
    ("OBJVAULT_S3_CHUNK_BYTES", str(128 << 20), "s3.chunk_bytes"),
])
def test_bad_env_values_name_the_key(var, value, key):
    with pytest.raises(ConfigError) as e:
        load_config(env={var: value})
    assert key in str(e.value)


@pytest.mark.parametrize("text,key", [
    ("colour = 1\n", "colour"),
    ('[gc]\ncolour = 1\n', "colour"),
    ('[scrub]\nspeed = 1\n', "speed"),
    ('[[replication.targets]]\nname = "x"\nurl = "s3://b"\nbucket = "b"\n', "bucket"),
    ('[replication]\nsomething = 1\n', "replication"),
    ('[tls]\ncert = "x"\n', "tls"),
    ('listen_file = "/etc/hostname"\n', "listen_file"),   # only secrets come from *_file keys
])
def test_unknown_key_fails(toml, text, key):
    with pytest.raises(ConfigError) as e:
        load_config(toml(text), env={})
    assert key in str(e.value)


def test_malformed_toml(toml):
    path = toml("listen = \n")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert path in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(str(tmp_path / "absent.toml"), env={})
    assert "absent.toml" in str(e.value)


# -- the server with a bad configuration ----------------------------------------------------


def _serve(tmp_path, env: dict, args=(), timeout: float = 30) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OBJVAULT_")}
    base.update({"OBJVAULT_SEGMENT_BYTES": str(64 << 20), "OBJVAULT_DATA_DIRS": str(tmp_path / "data"),
                 "OBJVAULT_LISTEN": f"127.0.0.1:{free_port()}", "OBJVAULT_S3_LISTEN": f"127.0.0.1:{free_port()}"})
    base.update(env)
    return subprocess.run([OBJVAULT, "serve", *args], env=base, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("env,key", [
    ({"OBJVAULT_MAX_CHUNK_BYTES": "lots"}, "max_chunk_bytes"),
    ({"OBJVAULT_LISTEN": "nowhere"}, "listen"),
    ({"OBJVAULT_GC_GRACE_SECONDS": "-1"}, "grace_seconds"),
])
def test_server_with_bad_env_exits_nonzero(tmp_path, env, key):
    p = _serve(tmp_path, env)
    assert p.returncode != 0
    assert key in p.stderr, p.stderr


def test_server_with_bad_file_exits_nonzero(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('listen = "127.0.0.1:1"\nwibble = true\n')
    p = _serve(tmp_path, {"OBJVAULT_CONFIG": str(cfg)})
    assert p.returncode != 0
    assert "wibble" in p.stderr, p.stderr
    p = _serve(tmp_path, {}, ["--config", str(cfg)])
    assert p.returncode != 0
    assert "wibble" in p.stderr, p.stderr


def test_server_with_bad_flag_exits_nonzero(tmp_path):
    p = _serve(tmp_path, {}, ["--listen", "not-an-address"])
    assert p.returncode != 0
    assert "listen" in p.stderr, p.stderr


def test_server_flag_beats_env(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJVAULT_")}
    env.update({"OBJVAULT_SEGMENT_BYTES": str(64 << 20), "OBJVAULT_DATA_DIRS": str(tmp_path / "data"),
                "OBJVAULT_LISTEN": f"127.0.0.1:{free_port()}", "OBJVAULT_ADMIN_TOKEN": "env-token",
                "OBJVAULT_S3_LISTEN": f"127.0.0.1:{free_port()}"})
    proc = subprocess.Popen([OBJVAULT, "serve", "--listen", f"127.0.0.1:{port}", "--admin-token", "flag-token"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1, verify=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1/vaults"
        assert httpx.get(url, headers={"Authorization": "Bearer flag-token"}, verify=False).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer env-token"}, verify=False).status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
