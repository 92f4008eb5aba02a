"""The Helm chart, with the real tools: ``helm lint --strict``, ``helm
template`` for the defaults and every ``ci/*-values.yaml``, every rendered
manifest through ``kubernetes-validate --strict``, and the rendered
objvault.toml through the real config loader with the rendered Secret's
files in place.

helm comes from scripts/get-helm.sh (pinned, checksummed; idempotent)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from vault.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "objvault"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VARIANTS = ["defaults"] + [p.name for p in CI_VALUES]
RELEASE, NAMESPACE = "backup", "vaults"
FULLNAME = f"{RELEASE}-objvault"
# The oldest Kubernetes the chart allows (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.25.0", "1.33.0")
# Custom resources: kubernetes-validate ships schemas for built-in kinds only.
CUSTOM_KINDS = {"ServiceMonitor"}
SECRETS_DIR = "/etc/objvault/secrets"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> dict:
    """Path to the pinned helm, fetched if missing, and a private HELM_* environment."""
    subprocess.run(["bash", str(ROOT / "scripts" / "get-helm.sh")], check=True, timeout=600)
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data"), "KUBECONFIG": str(home / "kubeconfig")}
    return {"bin": str(ROOT / "tools" / "helm"), "env": env}


def run_helm(helm: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([helm["bin"], *args], env=helm["env"], capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def values_args(variant: str) -> list[str]:
    return [] if variant == "defaults" else ["-f", str(CHART / "ci" / variant)]


def ci_values(variant: str) -> dict:
    return {} if variant == "defaults" else (yaml.safe_load((CHART / "ci" / variant).read_text()) or {})


@pytest.fixture(scope="session")
def rendered(helm) -> dict[str, list[dict]]:
    """variant → the manifests `helm template` renders for it."""
    out = {}
    for variant in VARIANTS:
        proc = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values_args(variant))
        out[variant] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def only(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


# --------------------------------------------------------------------------
# helm itself
# --------------------------------------------------------------------------


def test_helm_is_the_pinned_binary(helm):
    assert run_helm(helm, "version", "--short").stdout.startswith("v4.")


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_strict(helm, variant):
    proc = run_helm(helm, "lint", "--strict", str(CHART), *values_args(variant))
    assert "[ERROR]" not in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_template_renders_the_expected_objects(rendered, variant):
    docs = rendered[variant]
    values = ci_values(variant)
    expected = {"StatefulSet", "Service", "ConfigMap"}
    assert expected <= set(kinds(docs))
    assert kinds(docs).count("Service") == 2
    assert ("Secret" in kinds(docs)) == (not values.get("auth", {}).get("existingSecret"))
    assert ("ServiceMonitor" in kinds(docs)) == values.get("metrics", {}).get("serviceMonitor", {}).get(
        "enabled", False)
    assert ("Ingress" in kinds(docs)) == values.get("ingress", {}).get("enabled", False)
    assert ("PodDisruptionBudget" in kinds(docs)) == values.get("pdb", {}).get("create", True)
    assert ("ServiceAccount" in kinds(docs)) == values.get("serviceAccount", {}).get("create", True)
    for d in docs:
        assert d["metadata"]["namespace"] == NAMESPACE
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_every_variant_is_covered():
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "existing-secret-values.yaml", "s3-replication-values.yaml",
            "ingress-servicemonitor-values.yaml"} <= names


def test_manifests_pass_kubernetes_validate_strict(rendered, tmp_path):
    files, expected = [], 0
    for variant, docs in rendered.items():
        builtin = [d for d in docs if d["kind"] not in CUSTOM_KINDS]
        path = tmp_path / f"{variant}.yaml"
        path.write_text(yaml.safe_dump_all(builtin))
        files.append(str(path))
        expected += len(builtin) * len(KUBE_VERSIONS)
    args = [str(KUBERNETES_VALIDATE), "--strict"]
    for v in KUBE_VERSIONS:
        args += ["-k", v]
    proc = subprocess.run(args + files, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A kind without a schema is only a WARN to kubernetes-validate: count the passes.
    assert not re.search(r"^(WARN|ERROR|FATAL)", proc.stdout, flags=re.M), proc.stdout
    assert proc.stdout.count(" passed for resource ") == expected, proc.stdout


def test_servicemonitor_scrapes_the_service_once(rendered):
    docs = rendered["ingress-servicemonitor-values.yaml"]
    sm = only(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["scheme"] == "http"
    selector = sm["spec"]["selector"]["matchLabels"]
    matching = [d for d in docs if d["kind"] == "Service"
                and selector.items() <= d["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in matching] == [FULLNAME]
    assert endpoint["port"] in {p["name"] for p in matching[0]["spec"]["ports"]}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("variant", [v for v in VARIANTS if ci_values(v).get("metrics", {}).get(
    "serviceMonitor", {}).get("enabled")])
def test_servicemonitor_scrapes_with_the_metrics_token(rendered, variant):
    # Without the token /metrics leaves out the per-vault series; the
    # ServiceMonitor sends the very token the server reads.
    docs = rendered[variant]
    [endpoint] = only(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": FULLNAME, "key": "metrics-token"}}
    secret = only(docs, "Secret", FULLNAME)
    token = base64.b64decode(secret["data"]["metrics-token"]).decode()
    admin = base64.b64decode(secret["data"]["admin-token"]).decode()
    assert len(token) >= 32 and token != admin
    toml_text = only(docs, "ConfigMap")["data"]["objvault.toml"]
    assert tomllib.loads(toml_text)["metrics_token_file"] == f"{SECRETS_DIR}/metrics-token"
    sts = only(docs, "StatefulSet")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == FULLNAME


def test_servicemonitor_uses_the_existing_secret(helm):
    out = run_helm(helm, "template", RELEASE, str(CHART), "--set", "auth.existingSecret=objvault-credentials",
                   "--set", "metrics.serviceMonitor.enabled=true").stdout
    [endpoint] = only([d for d in yaml.safe_load_all(out) if d], "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {"name": "objvault-credentials", "key": "metrics-token"}


def test_metrics_token_from_values(helm):
    out = run_helm(helm, "template", RELEASE, str(CHART), "--set", "auth.metricsToken=given-scrape-token").stdout
    secret = only([d for d in yaml.safe_load_all(out) if d], "Secret")
    assert base64.b64decode(secret["data"]["metrics-token"]).decode() == "given-scrape-token"


def test_ingress_routes_to_the_service_with_tls(rendered):
    ing = only(rendered["ingress-servicemonitor-values.yaml"], "Ingress")
    assert ing["spec"]["tls"] == [{"hosts": ["vault.msp.example.com"], "secretName": "objvault-ingress-tls"}]
    [rule] = ing["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"


# --------------------------------------------------------------------------
# the pod
# --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_statefulset_security_context_and_probes(rendered, variant):
    sts = only(rendered[variant], "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001 and psc["fsGroup"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    [c] = pod["containers"]
    csc = c["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["runAsNonRoot"] is True and csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False

    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    scheme = "HTTPS" if ci_values(variant).get("tls", {}).get("enabled") else "HTTP"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http", "scheme": scheme}
    assert c["ports"] == [{"name": "http", "containerPort": 8470, "protocol": "TCP"},
                          {"name": "s3", "containerPort": 8471, "protocol": "TCP"}]
    assert "resources" in c or variant == "minimal-values.yaml"
    assert pod["terminationGracePeriodSeconds"] >= 30

    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/secret"])
    assert sts["spec"]["serviceName"] == f"{FULLNAME}-headless"
    headless = only(rendered[variant], "Service", f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("variant", VARIANTS)
def test_persistence(rendered, variant):
    sts = only(rendered[variant], "StatefulSet")
    persistence = ci_values(variant).get("persistence", {})
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [c] = pod["containers"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    if persistence.get("enabled", True):
        [vct] = sts["spec"]["volumeClaimTemplates"]
        assert vct["metadata"]["name"] == "data" and "data" not in volumes
        assert vct["spec"]["resources"]["requests"]["storage"] == persistence.get("size", "100Gi")
        assert vct["spec"]["accessModes"] == persistence.get("accessModes", ["ReadWriteOnce"])
        if persistence.get("storageClass"):
            assert vct["spec"]["storageClassName"] == persistence["storageClass"]
        else:
            assert "storageClassName" not in vct["spec"]
        assert vct["metadata"].get("annotations", {}) == persistence.get("annotations", {})
        if persistence.get("retentionPolicy"):
            assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == persistence["retentionPolicy"]
    else:
        assert "volumeClaimTemplates" not in sts["spec"]
        assert "emptyDir" in volumes["data"]


def test_storage_class_dash_disables_provisioning(helm):
    out = run_helm(helm, "template", RELEASE, str(CHART), "--set", "persistence.storageClass=-").stdout
    sts = only([d for d in yaml.safe_load_all(out) if d], "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == ""


# --------------------------------------------------------------------------
# the configuration the pod reads
# --------------------------------------------------------------------------


def secret_files(docs: list[dict], values: dict) -> tuple[str, dict[str, str]]:
    """(Secret name, {key: contents}) of what the pod mounts at SECRETS_DIR.

    With auth.existingSecret, the keys are those the chart documents for it."""
    existing = values.get("auth", {}).get("existingSecret")
    if not existing:
        secret = only(docs, "Secret")
        return secret["metadata"]["name"], {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    keys = ["admin-token", "metrics-token"]
    for t in values.get("replication", {}).get("targets", []):
        if t["kind"] == "s3" and not t.get("ambientCredentials"):
            keys += [f"{t['name']}-access-key-id", f"{t['name']}-secret-access-key"]
        if t["kind"] == "objvault":
            keys.append(f"{t['name']}-token")
        if t.get("encrypt") or t.get("encryptionKey"):
            keys.append(f"{t['name']}-encryption-key")
    for w in values.get("alerts", {}).get("webhooks", []):
        keys += [f"webhook-{w['name']}-url", f"webhook-{w['name']}-secret"]
    # Contents that cannot be mistaken for a key name or a path.
    files = {k: hashlib.sha256(k.encode()).hexdigest()[:32] for k in keys}
    files.update({k: "https://hooks.example/" + v for k, v in files.items() if k.endswith("-url")})
    return existing, files


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_config_loads_with_the_real_loader(rendered, variant, tmp_path):
    docs = rendered[variant]
    values = ci_values(variant)
    toml_text = only(docs, "ConfigMap")["data"]["objvault.toml"]
    doc = tomllib.loads(toml_text)

    # The pod mounts the ConfigMap where OBJVAULT_CONFIG says, and the Secret
    # where the *_file keys point.
    sts = only(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    [c] = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["config"]["mountPath"] == env["OBJVAULT_CONFIG"]
    assert volumes["config"]["configMap"]["name"] == only(docs, "ConfigMap")["metadata"]["name"]
    assert mounts["secrets"]["mountPath"] == SECRETS_DIR
    secret_name, files = secret_files(docs, values)
    assert volumes["secrets"]["secret"]["secretName"] == secret_name

    # Every *_file path names a key of that Secret.
    paths = re.findall(r'^\w+_file = "([^"]*)"', toml_text, flags=re.M)
    for p in paths:
        if p.startswith(SECRETS_DIR + "/"):
            assert p.removeprefix(SECRETS_DIR + "/") in files, f"{p} is not a key of Secret {secret_name}"
    assert doc["admin_token_file"] == f"{SECRETS_DIR}/admin-token"
    assert doc["metrics_token_file"] == f"{SECRETS_DIR}/metrics-token"
    # No secret value is written into the ConfigMap.
    for value in files.values():
        assert value not in toml_text

    # Lay the Secret out as the kubelet would and load the file for real,
    # with the pod's environment.
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for key, content in files.items():
        (secrets / key).write_text(content)
    tls = tmp_path / "tls"
    config = tmp_path / "objvault.toml"
    config.write_text(toml_text.replace(f'"{SECRETS_DIR}/', f'"{secrets}/').replace('"/etc/objvault/tls/', f'"{tls}/'))
    pod_env = {k: v for k, v in env.items() if v is not None and k != "OBJVAULT_CONFIG"}
    cfg = load_config(config, env=pod_env)

    assert cfg.listen == "0.0.0.0:8470"
    assert cfg.data_dirs == ["/data"]
    assert cfg.admin_token == files["admin-token"]
    if values.get("auth", {}).get("adminToken"):
        assert cfg.admin_token == values["auth"]["adminToken"]
    # The server gets the token the ServiceMonitor scrapes with.
    assert cfg.metrics_token == files["metrics-token"] and cfg.metrics_token != cfg.admin_token
    assert bool(cfg.tls_cert_file) == bool(values.get("tls", {}).get("enabled"))
    conf = values.get("config", {})
    assert cfg.log_level == conf.get("logLevel", "info")
    assert cfg.max_chunk_bytes == conf.get("maxChunkBytes", 134217728)
    assert cfg.gc.grace_seconds == conf.get("gc", {}).get("graceSeconds", 86400)
    assert cfg.gc.compact_threshold == conf.get("gc", {}).get("compactThreshold", 0.5)
    assert cfg.scrub.rate_bytes_per_second == conf.get("scrub", {}).get("rateBytesPerSecond", 52428800)

    targets = values.get("replication", {}).get("targets", [])
    assert [t.name for t in cfg.replication_targets] == [t["name"] for t in targets]
    for want, got in zip(targets, cfg.replication_targets):
        assert (got.kind, got.url) == (want["kind"], want["url"])
        assert got.endpoint == want.get("endpoint", "")
        assert got.vaults == want.get("vaults", ["*"])
        assert got.delete_delay_seconds == want.get("deleteDelaySeconds", 604800)
        assert got.concurrency == want.get("concurrency", 8)
        assert got.checkpoint_interval_seconds == want.get("checkpointIntervalSeconds", 86400)
        if want["kind"] == "s3" and not want.get("ambientCredentials"):
            assert got.access_key_id == files[f"{want['name']}-access-key-id"]
            assert got.secret_access_key == files[f"{want['name']}-secret-access-key"]
            if "accessKeyId" in want:
                assert got.access_key_id == want["accessKeyId"]
        else:
            assert got.access_key_id == got.secret_access_key == ""
        if want["kind"] == "objvault":
            assert got.token == files[f"{want['name']}-token"]
        if want.get("encrypt") or want.get("encryptionKey"):
            assert Path(got.encryption_key_file).read_text() == files[f"{want['name']}-encryption-key"]
        else:
            assert got.encryption_key_file == ""

    # Webhooks: URL and signing secret from the Secret, as the values gave them.
    hooks = values.get("alerts", {}).get("webhooks", [])
    assert [(h.url, h.secret, h.events) for h in cfg.alerts.webhooks] == [
        (files[f"webhook-{w['name']}-url"], files[f"webhook-{w['name']}-secret"], w.get("events", ["*"]))
        for w in hooks]
    for w in hooks:
        if "url" in w:
            assert files[f"webhook-{w['name']}-url"] == w["url"] and w["url"] not in toml_text


# --------------------------------------------------------------------------
# rolling on change, refusing bad values
# --------------------------------------------------------------------------


def pod_annotations(helm, *args: str) -> dict:
    out = run_helm(helm, "template", RELEASE, str(CHART), *args).stdout
    sts = only([d for d in yaml.safe_load_all(out) if d], "StatefulSet")
    return sts["spec"]["template"]["metadata"]["annotations"]


def test_checksums_change_only_with_their_inputs(helm):
    base = pod_annotations(helm)
    # Same values → same checksums, though the generated admin token differs per render.
    assert pod_annotations(helm) == base
    config = pod_annotations(helm, "--set", "config.gc.graceSeconds=7200")
    assert config["checksum/config"] != base["checksum/config"]
    assert config["checksum/secret"] == base["checksum/secret"]
    secret = pod_annotations(helm, "--set", "auth.adminToken=rotated")
    assert secret["checksum/secret"] != base["checksum/secret"]
    assert secret["checksum/config"] == base["checksum/config"]
    metrics = pod_annotations(helm, "--set", "auth.metricsToken=rotated")
    assert metrics["checksum/secret"] not in (base["checksum/secret"], secret["checksum/secret"])
    existing = pod_annotations(helm, "--set", "auth.existingSecret=other")
    assert existing["checksum/secret"] != base["checksum/secret"]
    hook = "alerts.webhooks[0].name=ops,alerts.webhooks[0].url=https://h.example/a,alerts.webhooks[0].secret="
    one, rotated = pod_annotations(helm, "--set", hook + "s1"), pod_annotations(helm, "--set", hook + "s2")
    assert one["checksum/secret"] != rotated["checksum/secret"]
    assert one["checksum/config"] == rotated["checksum/config"] != base["checksum/config"]


@pytest.mark.parametrize("args, message", [
    (["--set", "config.logLevel=loud"], "logLevel"),
    (["--set", "config.gc.compactThreshold=2"], "compactThreshold"),
    (["--set", "persistenc.size=1Gi"], "persistenc"),
    (["--set", "replication.targets[0].name=Offsite", "--set", "replication.targets[0].kind=s3",
      "--set", "replication.targets[0].url=s3://b/p"], "name"),
    (["--set", "replication.targets[0].name=x", "--set", "replication.targets[0].kind=ftp",
      "--set", "replication.targets[0].url=ftp://x"], "kind"),
    (["--set", "replication.targets[0].name=x", "--set", "replication.targets[0].kind=s3",
      "--set", "replication.targets[0].url=s3://b/p", "--set", "replication.targets[0].accessKeyId=a"],
     "set accessKeyId and secretAccessKey together"),
    (["--set", "replication.targets[0].name=x", "--set", "replication.targets[0].kind=s3",
      "--set", "replication.targets[0].url=s3://b/p", "--set", "replication.targets[0].encrypt=true"],
     "encrypt needs encryptionKey"),
    (["--set", "replication.targets[0].name=x", "--set", "replication.targets[0].kind=local",
      "--set", "replication.targets[0].url=/mnt/x"], "file:// url"),
    (["--set", "tls.enabled=true"], "tls.existingSecret is required"),
])
def test_bad_values_are_refused(helm, args, message):
    proc = run_helm(helm, "template", RELEASE, str(CHART), *args, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# --------------------------------------------------------------------------
# NOTES.txt
# --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["defaults", "existing-secret-values.yaml"])
def test_notes_tell_how_to_start(helm, variant):
    proc = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                    *values_args(variant))
    notes = proc.stdout.split("NOTES:", 1)[1]
    secret = ci_values(variant).get("auth", {}).get("existingSecret") or FULLNAME
    assert (f"kubectl get secret --namespace {NAMESPACE} {secret} "
            "-o jsonpath='{.data.admin-token}' | base64 -d") in notes
    assert '"$OBJVAULT_URL/v1/vaults"' in notes and """-d '{"name": "acme"}'""" in notes
    assert '"$OBJVAULT_URL/v1/vaults/acme/keys"' in notes and """-d '{"role": "append"}'""" in notes
    assert "/restic/acme/" in notes
