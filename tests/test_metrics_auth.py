"""/metrics and tenants: per-vault series reach only the metrics token, the
admin token, or the metrics_listen site; everyone else gets the series that
name no vault (docs/api.md, the /metrics row; docs/deploy.md, "Metrics")."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.apihelpers import self_signed
from tests.server import Server, free_port, sha
from vault.config import ConfigError, load_config
from vault.metrics import Metrics, gauge

# Names that occur nowhere in the exposition unless a per-vault series is there.
VAULTS = ("zanzibar-tenant", "quokka-customer")
METRICS_TOKEN = "scrape-token-4f1c9e0b7d"
# Series that name no vault: the reduced view must keep them.
GLOBAL_SERIES = ("objvault_http_requests_total", "objvault_chunks_written_total", "objvault_data_dir_free_bytes",
                 "objvault_segments", "objvault_index_commit_batch_ops_count")
TENANT_SERIES = ("objvault_vault_stored_bytes", "objvault_vault_objects", "objvault_vault_quota_bytes")


def populate(srv: Server) -> None:
    """Two vaults with a quota, chunks and an object each."""
    for i, name in enumerate(VAULTS):
        srv.create_vault(name, quota_bytes=10**9)
        c = srv.client(srv.create_key(name))
        ids = [srv.put_chunk(c, name, f"{name} chunk {j}".encode() * (i + 1)) for j in range(3)]
        r = c.put(f"/v1/vaults/{name}/objects/host/2026-01-01", json={"chunks": ids})
        assert r.status_code == 201, r.text


def scrape(url: str, token: str | None = None, **kw) -> str:
    # httpx refuses a header value with trailing blanks: an empty token is a bare "Bearer".
    headers = {"Authorization": f"Bearer {token}".strip()} if token is not None else {}
    r = httpx.get(url + "/metrics", headers=headers, timeout=30, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def assert_reduced(text: str) -> None:
    for name in VAULTS:
        assert name not in text
    assert "objvault_vault_" not in text
    for series in GLOBAL_SERIES:
        assert f"\n{series}" in text, series


def assert_full(text: str) -> None:
    for name in VAULTS:
        for series in TENANT_SERIES:
            assert f'{series}{{vault="{name}"}}' in text, (series, name)
    for series in GLOBAL_SERIES:
        assert f"\n{series}" in text, series


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    """A server with a metrics token (environment) and two populated vaults."""
    srv = Server(tmp_path_factory.mktemp("metrics-auth"), env={"OBJVAULT_METRICS_TOKEN": METRICS_TOKEN}).start()
    try:
        populate(srv)
        yield srv
    finally:
        srv.stop()


# -- the public listener ------------------------------------------------------------


def test_anonymous_scrape_names_no_vault_but_keeps_global_series(tenants):
    assert_reduced(scrape(tenants.url))


def test_metrics_token_gets_per_vault_series_and_nothing_else(tenants):
    assert_reduced(scrape(tenants.url))
    assert_full(scrape(tenants.url, METRICS_TOKEN))
    # A scraper's credential, not an operator's.
    c = tenants.client(METRICS_TOKEN)
    assert c.get("/v1/vaults").status_code == 401
    assert c.get("/v1/admin/usage").status_code == 401


def test_admin_token_gets_per_vault_series(tenants):
    assert_reduced(scrape(tenants.url))
    assert_full(scrape(tenants.url, tenants.admin_token))


@pytest.mark.parametrize("token", ["wrong-token", METRICS_TOKEN + "x", METRICS_TOKEN[:-1], "", "ovk_nosuchkey_secret"])
def test_wrong_token_gets_the_reduced_view_not_an_error(tenants, token):
    assert_reduced(scrape(tenants.url, token))


def test_other_credentials_get_the_reduced_view(tenants):
    # A vault's own key is no scraper credential, not even for its own vault.
    key = tenants.create_key(VAULTS[0], role="full")
    assert_reduced(scrape(tenants.url, key))
    # A malformed Basic header is still no error here.
    r = httpx.get(tenants.url + "/metrics", headers={"Authorization": "Basic !!!"}, timeout=30)
    assert r.status_code == 200
    assert_reduced(r.text)
    # The metrics token as a Basic password, as Prometheus' basic_auth sends it.
    assert_full(httpx.get(tenants.url + "/metrics", auth=("prometheus", METRICS_TOKEN), timeout=30).text)


def test_metrics_token_from_a_file(make_server, tmp_path):
    token_file = tmp_path / "metrics.token"
    token_file.write_text("from-a-file-7c2d\n")
    srv = make_server(config=f'metrics_token_file = "{token_file}"\n')
    populate(srv)
    assert_reduced(scrape(srv.url))
    assert_full(scrape(srv.url, "from-a-file-7c2d"))


def test_without_a_metrics_token_only_the_admin_token_unlocks(make_server):
    srv = make_server()
    populate(srv)
    for token in (None, "", "anything"):
        assert_reduced(scrape(srv.url, token))
    assert_full(scrape(srv.url, srv.admin_token))


# -- metrics_listen ---------------------------------------------------------------------


def test_metrics_listen_serves_every_series_without_a_token(make_server):
    port = free_port()
    srv = make_server(env={"OBJVAULT_METRICS_LISTEN": f"127.0.0.1:{port}"})
    populate(srv)
    site = f"http://127.0.0.1:{port}"
    assert_full(scrape(site))
    # The public listener still needs a token for them.
    assert_reduced(scrape(srv.url))
    # Only /metrics (and /healthz) there: the API is not reachable through it.
    healthz = httpx.get(site + "/healthz", timeout=30)
    assert healthz.status_code == 200 and healthz.headers["server"] == "objvault"
    for path in ("/v1/vaults", "/readyz", "/v1/admin/usage", "/v1/openapi.json"):
        r = httpx.get(site + path, headers={"Authorization": f"Bearer {srv.admin_token}"}, timeout=30)
        assert r.status_code == 404, path
    assert srv.stop() == 0


def test_metrics_listen_speaks_tls_when_the_server_does(make_server, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    srv = make_server(start=False, env={"OBJVAULT_TLS_CERT_FILE": cert, "OBJVAULT_TLS_KEY_FILE": key,
                                        "OBJVAULT_METRICS_LISTEN": f"127.0.0.1:{port}"})
    srv.url = srv.url.replace("http://", "https://")
    srv.start()
    verify = ssl.create_default_context(cafile=cert)
    srv._admin = srv.client(verify=verify)
    srv.create_vault(VAULTS[0])
    text = scrape(f"https://127.0.0.1:{port}", verify=verify)
    assert f'objvault_vault_objects{{vault="{VAULTS[0]}"}} 0.0' in text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert VAULTS[0] not in scrape(srv.url, verify=verify)


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1", ":9100", "127.0.0.1:0", "127.0.0.1:65536",
                                   "127.0.0.1:http", "localhost:-1"])
def test_bad_metrics_listen_names_the_key(tmp_path, value):
    path = tmp_path / "objvault.toml"
    path.write_text(f'metrics_listen = "{value}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert "metrics_listen" in str(e.value) and value in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(env={"OBJVAULT_METRICS_LISTEN": value})
    assert "metrics_listen" in str(e.value)


def test_metrics_settings_load(tmp_path):
    token_file = tmp_path / "m.token"
    token_file.write_text("  file-token \n")
    cfg = load_config(env={"OBJVAULT_METRICS_LISTEN": "[::1]:9470", "OBJVAULT_METRICS_TOKEN_FILE": str(token_file)})
    assert (cfg.metrics_listen, cfg.metrics_token) == ("[::1]:9470", "file-token")
    cfg = load_config(env={})
    assert (cfg.metrics_listen, cfg.metrics_token) == ("", "")
    with pytest.raises(ConfigError) as e:
        load_config(env={"OBJVAULT_METRICS_TOKEN_FILE": str(tmp_path / "absent")})
    assert "metrics_token_file" in str(e.value)


# -- vault.metrics ---------------------------------------------------------------------------


def test_tenant_callbacks_appear_only_in_the_full_view():
    m = Metrics()
    m.add_callback(lambda: [gauge("objvault_example_tenant", "per vault", ["vault"], [(["acme-corp"], 1)])],
                   tenant=True)
    m.add_callback(lambda: [gauge("objvault_example_global", "global", [], [([], 2)])])
    reduced, full = m.render().decode(), m.render(full=True).decode()
    assert "acme-corp" not in reduced and "objvault_example_tenant" not in reduced
    assert "objvault_example_global 2.0" in reduced
    assert 'objvault_example_tenant{vault="acme-corp"} 1.0' in full and "objvault_example_global 2.0" in full


def test_scrape_token_is_kept_as_a_digest_only():
    m = Metrics()
    assert not m.is_scrape_token("anything") and not m.is_scrape_token(None)
    m.set_scrape_token("s3cret-scrape")
    assert m.is_scrape_token("s3cret-scrape")
    for wrong in ("s3cret-scrap", "s3cret-scrape ", "S3CRET-SCRAPE", "", None):
        assert not m.is_scrape_token(wrong)
    assert not any(v == "s3cret-scrape" for v in vars(m).values())
    assert sha(b"s3cret-scrape") in {v.hex() for v in vars(m).values() if isinstance(v, bytes)}
    m.set_scrape_token("")
    assert not m.is_scrape_token("s3cret-scrape") and not m.is_scrape_token("")
