"""The deployment files under deploy/: the Kubernetes manifests validate against the
Kubernetes schemas (offline, kubernetes-validate) and say what a shard needs; the ConfigMap's
botvisor.toml is a configuration botvisor accepts; the Containerfile is pinned, non-root and
runs the console script; the nginx rule routes /tg/s/{i}/ to shard i and passes ``nginx -t``
where nginx is installed; the systemd unit is one shard per instance with LimitNOFILE."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from actors import BotMode, jump_hash
from supervisor import cli
from supervisor.loading import load_config
from tests.certificates import needs_openssl, self_signed

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes with the apps.kubernetes.io/pod-index label on StatefulSet pods.
KUBERNETES_VERSION = "1.28.0"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path.name, document))
    return found


def by_kind(kind: str, component: str | None = None) -> list[dict[str, Any]]:
    """The documents of ``kind``; with ``component``, those labelled with it (``shard``,
    ``gateway``)."""
    return [
        doc
        for _name, doc in manifests()
        if doc["kind"] == kind
        and (
            component is None
            or doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        )
    ]


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    checked = 0
    for _name, document in manifests():
        if document["kind"] == "Kustomization":
            continue  # kustomize's own file, not a Kubernetes resource
        # strict: a misspelt field is an error, not silently dropped by the API server.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 6, checked


def test_a_misspelt_field_fails_the_validation() -> None:
    (statefulset,) = by_kind("StatefulSet")
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_resource_but_the_example_secrets() -> None:
    (kustomization,) = by_kind("Kustomization")
    files = {path.name for path in KUBERNETES.glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml", "secret.example.yaml"}


def test_the_statefulset_gives_each_shard_its_volume_its_ordinal_and_the_count() -> None:
    (statefulset,) = by_kind("StatefulSet")
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    index_ref = env["BOTVISOR_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index_ref == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["BOTVISOR_SHARD_COUNT"]["value"] == str(spec["replicas"])
    # Secrets by reference, never a value in the manifest.
    for name in (
        "BOTVISOR_ADMIN_TOKEN",
        "BOTVISOR_WEBHOOK_SECRET",
        "BOTVISOR_DATABASE_URL",
        "BOTVISOR_REGISTRY_KEY",
    ):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "botvisor-secrets"
        assert "value" not in env[name]
    assert container["envFrom"] == [{"secretRef": {"name": "botvisor-bot-tokens"}}]
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/botvisor"
    (headless,) = by_kind("Service", "shard")
    assert spec["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["args"][:2] == ["run", "--config"]
    # The grace Kubernetes gives covers botvisor's own, with a margin.
    config = config_map_toml()
    graceful = float(re.search(r"graceful_timeout = (\d+)", config).group(1))  # type: ignore[union-attr]
    assert pod["terminationGracePeriodSeconds"] >= graceful + 5
    (budget,) = [b for b in by_kind("PodDisruptionBudget") if "maxUnavailable" in b["spec"]]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def config_map_toml(key: str = "botvisor.toml") -> str:
    (config_map,) = by_kind("ConfigMap")
    text: str = config_map["data"][key]
    return text


def test_the_gateway_runs_two_stateless_replicas_over_every_shard(tmp_path: Path) -> None:
    (deployment,) = by_kind("Deployment", "gateway")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2
    assert container["args"] == ["gateway", "--config", "/etc/botvisor/gateway.toml"]
    # The admin token by reference, the same Secret key as the shards'.
    (token,) = container["env"]
    assert token["name"] == "BOTVISOR_ADMIN_TOKEN"
    assert token["valueFrom"]["secretKeyRef"] == {"name": "botvisor-secrets", "key": "admin-token"}
    # Non-root, read-only, no capabilities, no volume of its own: stateless.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "volumeClaimTemplates" not in spec
    (service,) = by_kind("Service", "gateway")
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    (budget,) = by_kind("PodDisruptionBudget", "gateway")
    assert budget["spec"]["minAvailable"] == 1
    # gateway.toml is a configuration the gateway accepts, over the StatefulSet's shards by
    # the headless Service's names; not scraped (it serves no /metrics).
    from supervisor.gateway import load_gateway_config

    path = tmp_path / "gateway.toml"
    path.write_text(config_map_toml("gateway.toml"))
    secrets = {k: v for doc in by_kind("Secret") for k, v in doc["stringData"].items()}
    config = load_gateway_config(path, {"BOTVISOR_ADMIN_TOKEN": secrets["admin-token"]})
    (statefulset,) = by_kind("StatefulSet")
    (headless,) = by_kind("Service", "shard")
    shards = statefulset["spec"]["replicas"]
    assert config.urls == [
        f"http://{statefulset['metadata']['name']}-{i}.{headless['metadata']['name']}:8080"
        for i in range(shards)
    ]
    assert config.port == container["ports"][0]["containerPort"]
    assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"].get(
        "annotations", {}
    )


def test_the_config_map_is_a_configuration_botvisor_accepts(tmp_path: Path) -> None:
    path = tmp_path / "botvisor.toml"
    path.write_text(config_map_toml().replace("/var/lib/botvisor", str(tmp_path)))
    secrets = by_kind("Secret")
    environ = {key: value for doc in secrets for key, value in doc["stringData"].items()}
    environ["BOTVISOR_ADMIN_TOKEN"] = environ.pop("admin-token")
    environ["BOTVISOR_WEBHOOK_SECRET"] = environ.pop("webhook-secret")
    environ["BOTVISOR_DATABASE_URL"] = environ.pop("database-url")
    environ["BOTVISOR_REGISTRY_KEY"] = environ.pop("registry-key")
    config = load_config(path, environ, check_environment=True)
    # The shards are fenced through the database the Secret names.
    assert config.cluster is not None
    assert config.cluster.database_url == environ["BOTVISOR_DATABASE_URL"]
    # The registry's tokens are sealed with the key the Secret holds.
    assert config.cluster.registry_key == environ["BOTVISOR_REGISTRY_KEY"]
    assert config.storage.path == str(tmp_path / "botvisor.db")
    assert config.webhook.public_url is not None
    assert config.webhook.bot_url(1002, shard=jump_hash(1002, 3)).startswith(
        config.webhook.public_url + "/s/"
    )
    assert {bot.mode for bot in config.bots} == {BotMode.POLLING, BotMode.WEBHOOK}
    # Every token_env of the file is a key of the bot-token Secret.
    (tokens,) = [doc for doc in secrets if doc["metadata"]["name"] == "botvisor-bot-tokens"]
    declared = tomllib.loads(config_map_toml())["bots"]
    assert {bot["token_env"] for bot in declared} == set(tokens["stringData"])


CONTAINERFILE = (DEPLOY / "Containerfile").read_text()


def test_the_containerfile_pins_a_slim_python_runs_as_non_root_and_runs_botvisor() -> None:
    bases = re.findall(r"^FROM\s+(\S+)", CONTAINERFILE, re.MULTILINE)
    assert bases
    for base in bases:
        image, _, tag = base.partition(":")
        assert image.endswith("/python"), base
        # A version to the patch level (or a digest), never latest or a bare 3.
        assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", tag), base
    users = re.findall(r"^USER\s+(\S+)", CONTAINERFILE, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (entrypoint,) = re.findall(r"^ENTRYPOINT\s+(.+)$", CONTAINERFILE, re.MULTILINE)
    assert entrypoint.strip() == '["botvisor"]'
    assert re.search(r'^VOLUME \["/var/lib/botvisor"\]', CONTAINERFILE, re.MULTILINE)
    # The image the manifest runs is this file's: its args are botvisor's.
    (statefulset,) = by_kind("StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "--config", "/etc/botvisor/botvisor.toml"]
    assert f"CMD {str(container['args']).replace(chr(39), chr(34))}" in CONTAINERFILE
    # Every package of the distribution goes into the image.
    for package in ("supervisor", "actors", "admin", "storage"):
        assert f"COPY {package} ./{package}" in CONTAINERFILE


NGINX_CONF = (DEPLOY / "nginx" / "botvisor.conf").read_text()


def test_the_nginx_rule_sends_each_shards_path_to_that_shard() -> None:
    locations = dict(re.findall(r"location /tg/s/(\d+)/ \{\s*proxy_pass http://(\w+);", NGINX_CONF))
    assert locations == {str(i): f"botvisor_shard_{i}" for i in range(3)}
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server 127\.0\.0\.1:(\d+);", NGINX_CONF))
    # Shard i of deploy/systemd listens on 8443 + i.
    assert upstreams == {f"botvisor_shard_{i}": str(8443 + i) for i in range(3)}
    assert "return 421;" in NGINX_CONF
    assert "410" not in NGINX_CONF.replace("Never 410", "")


@needs_openssl
@pytest.mark.skipif(NGINX is None, reason="nginx is not installed: apt-get install nginx")
def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    assert NGINX is not None
    cert, key = self_signed(tmp_path, "bots")
    conf = NGINX_CONF.replace("/etc/ssl/botvisor/fullchain.pem", str(cert)).replace(
        "/etc/ssl/botvisor/privkey.pem", str(key)
    )
    (tmp_path / "botvisor.conf").write_text(conf)
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"""pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/botvisor.conf;
}}
"""
    )
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


UNIT = (DEPLOY / "systemd" / "botvisor@.service").read_text()


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_systemd_unit_runs_one_shard_per_instance_with_a_high_open_files_limit() -> None:
    settings = _unit_settings()
    assert "BOTVISOR_SHARD_INDEX=%i" in settings["Environment"]
    (exec_start,) = settings["ExecStart"]
    assert exec_start.split()[1:3] == ["run", "--config"]
    assert exec_start.split()[0].endswith("/botvisor")
    assert "%i" in exec_start
    (limit,) = settings["LimitNOFILE"]
    assert int(limit) >= 65536
    assert settings["User"] != ["root"]
    (state,) = settings["StateDirectory"]
    assert "%i" in state
    # The stop timeout covers the ConfigMap's graceful_timeout as Kubernetes' grace does.
    assert int(settings["TimeoutStopSec"][0]) >= 55
    for section in ("[Unit]", "[Service]", "[Install]"):
        assert section in UNIT


def test_the_systemd_unit_restarts_a_failed_or_refused_start_but_not_a_bad_configuration() -> None:
    settings = _unit_settings()
    assert settings["Restart"] == ["on-failure"]
    (prevented,) = settings["RestartPreventExitStatus"]
    codes = {int(code) for code in prevented.split()}
    assert {cli.EXIT_CONFIG, cli.EXIT_USAGE} <= codes
    assert not codes & {cli.EXIT_FAILED, cli.EXIT_TRY_AGAIN}
