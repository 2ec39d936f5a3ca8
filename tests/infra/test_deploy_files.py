"""The production deployment files (infra/deploy/) parse, pass only real settings, build a
valid production ``Settings`` for every Kibotos process, and run commands that exist.

No container runs here: the files are read as docker compose and kubectl would read
them, and the entry points they name are checked (the bootstrap job runs for real
against Tansu and chdb)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import uuid
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from kibotos.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def compose_interpolate(value: str, env: dict[str, str]) -> str:
    """docker compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``; a required
    variable must be in ``env`` (as it must be in .env)."""
    def one(m: re.Match) -> str:
        name, op, arg = m.groups()
        if name in env:
            return env[name]
        if op == "-":
            return arg
        raise AssertionError(f"${{{name}}} is required and unset: {arg or ''}")

    return _INTERPOLATION.sub(one, value)


def example_env() -> dict[str, str]:
    """The variables of kibotos.env.example (what an operator puts in .env)."""
    out = {}
    for line in (DEPLOY / "kibotos.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@lru_cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # merge keys (<<: *anchor) resolved by the loader


def _env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: compose_interpolate(str(v), example_env()) for k, v in env.items()}


def kibotos_services() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if "build" in s}


@lru_cache
def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def k8s_containers() -> dict[str, tuple[dict, dict[str, str]]]:
    """``{workload/container: (container, resolved env)}`` of every Deployment and Job."""
    config = {(d["kind"], d["metadata"]["name"]): {**d.get("data", {}), **d.get("stringData", {})}
              for d in k8s_docs() if d["kind"] in ("ConfigMap", "Secret")}
    out = {}
    for d in k8s_docs():
        if d["kind"] not in ("Deployment", "Job"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            env: dict[str, str] = {}
            for source in c.get("envFrom", []):
                kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret",
                                                                                                  source["secretRef"])
                env.update(config[(kind, ref["name"])])
            env.update({e["name"]: str(e["value"]) for e in c.get("env", [])})
            out[f"{d['metadata']['name']}/{c['name']}"] = (c, env)
    return out


def _workloads() -> list:
    compose_params = [pytest.param(s.get("command"), _env_of(s), id=f"compose:{n}")
                      for n, s in kibotos_services().items()]
    k8s_params = [pytest.param(c["command"], env, id=f"k8s:{name}") for name, (c, env) in k8s_containers().items()]
    return compose_params + k8s_params


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("KIBOTOS_"):
            monkeypatch.delenv(key)
    return monkeypatch


# --- settings ------------------------------------------------------------------------------

@pytest.mark.parametrize("command, env", _workloads())
def test_every_kibotos_variable_is_a_setting(command, env):
    unknown = [k for k in env if k.startswith("KIBOTOS_") and k[len("KIBOTOS_"):].lower() not in Settings.model_fields]
    assert not unknown, f"not fields of kibotos.config.settings.Settings: {unknown}"


@pytest.mark.parametrize("command, env", _workloads())
def test_every_process_gets_a_valid_production_settings(command, env, clean_env):
    for key, value in env.items():
        clean_env.setenv(key, value)
    settings = Settings()
    assert settings.mode == "production"
    assert settings.bootstrap_servers and settings.clickhouse_dsn.startswith(("http://", "https://"))
    assert settings.object_store_url.startswith("s3://") and settings.s3_endpoint
    assert settings.s3_access_key and settings.s3_secret_key
    if "uvicorn" in command[0]:  # the ingest API also needs the key shared by its replicas
        assert settings.ingest_secret and settings.ingest_public_url


def test_production_settings_refuse_what_is_missing(clean_env):
    env = _env_of(kibotos_services()["kibotos-gates"])
    for key, value in env.items():
        clean_env.setenv(key, value)
    clean_env.delenv("KIBOTOS_CLICKHOUSE_DSN")
    with pytest.raises(ValueError, match="KIBOTOS_CLICKHOUSE_DSN"):
        Settings()


def test_every_variable_grafana_provisioning_reads_is_set():
    grafana = _env_of(compose()["services"]["grafana"])
    needed = set()
    for path in (ROOT / "dashboards" / "provisioning").rglob("*.yaml"):
        lines = (line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        needed |= set(re.findall(r"\$\{(\w+)\}", "\n".join(lines)))
    assert needed and needed <= set(grafana), needed - set(grafana)


# --- commands --------------------------------------------------------------------------

@lru_cache
def _help(module: str) -> str:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("command, env", _workloads())
def test_commands_name_entry_points_that_exist(command, env):
    if command[:2] == ["python", "-m"]:
        module = command[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin, module
        assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), f"{module} is not runnable"
        options = _help(module)
    else:
        assert command[0] == "uvicorn" and "--factory" in command
        module, _, attr = command[1].partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        options = _help("uvicorn")
    for flag in (a for a in command if a.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", options), f"{command}: {flag} is not an option"


def test_compose_wiring():
    services = compose()["services"]
    for wanted in ("kafka", "clickhouse", "minio", "prometheus", "grafana", "kibotos-init", "kibotos-gates",
                   "kibotos-sink", "kibotos-novelty", "kibotos-ingest", "kibotos-gpu"):
        assert wanted in services
    for name, s in services.items():
        deps = s.get("depends_on") or {}
        assert set(deps) <= set(services) and name not in deps, name
    for name in kibotos_services():
        if name != "kibotos-init":
            assert services[name]["depends_on"]["kibotos-init"]["condition"] == "service_completed_successfully"
    init = services["kibotos-init"]
    assert init["command"] == ["python", "-m", "infra.bootstrap"] and init["restart"] == "no"
    assert {k: v["condition"] for k, v in init["depends_on"].items()} == {
        "kafka": "service_healthy", "clickhouse": "service_healthy", "minio": "service_healthy"}
    kafka = _env_of(services["kafka"])
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    [device] = services["kibotos-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_compose_mounts_exist_and_grafana_sees_the_dashboards():
    services = compose()["services"]
    for name, s in services.items():
        for volume in s.get("volumes", []):
            source, _, target = volume.partition(":")
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    provider = yaml.safe_load((ROOT / "dashboards" / "provisioning" / "dashboards" / "kibotos.yaml").read_text())
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in services["grafana"]["volumes"]
              if v.startswith(".")}
    assert mounts["/etc/grafana/provisioning"] == (ROOT / "dashboards" / "provisioning").resolve()
    assert mounts[provider["providers"][0]["options"]["path"]] == (ROOT / "dashboards" / "json").resolve()
    assert "grafana-clickhouse-datasource" in _env_of(services["grafana"])["GF_INSTALL_PLUGINS"]


def test_prometheus_scrapes_the_metrics_ports_the_processes_serve():
    services = compose()["services"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
        for sd in job.get("dns_sd_configs", []):
            targets |= {f"{n}:{sd['port']}" for n in sd["names"]}
    for name in ("kibotos-sink", "kibotos-novelty", "kibotos-gpu", "kibotos-gates"):
        command = services[name]["command"]
        flag = "--web-port" if "--web-port" in command else "--metrics-port"
        assert f"{name}:{command[command.index(flag) + 1]}" in targets, name
        # in a container /metrics must bind beyond loopback for Prometheus to reach it
        bind = "--web-bind" if flag == "--web-port" else "--metrics-host"
        assert command[command.index(bind) + 1] == "0.0.0.0", name


def test_the_image_ships_every_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\S+) ", (DEPLOY / "Dockerfile").read_text(), re.M))
    assert packages <= copied, packages - copied


def test_k8s_manifests():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in k8s_docs()}
    for wanted in (("Job", "kibotos-init"), ("Deployment", "kibotos-gates"), ("Deployment", "kibotos-sink"),
                   ("Deployment", "kibotos-novelty"), ("Deployment", "kibotos-ingest"), ("Deployment", "kibotos-gpu"), ("Service", "kibotos-ingest")):
        assert wanted in kinds
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    containers = k8s_containers()
    gpu, _ = containers["kibotos-gpu/gpu"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    for name, (c, _) in containers.items():
        assert c["image"] == "kibotos", name
    for d in k8s_docs():
        if d["kind"] == "Deployment":
            assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_no_machine_paths_or_literal_secrets():
    for path in [*DEPLOY.rglob("*"), *(ROOT / "dashboards" / "provisioning").rglob("*")]:
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"/(work|root|home|Users|tmp)/", text), path
    for name, s in compose()["services"].items():
        for key, value in (s.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY", key):
                assert "${" in str(value), f"{name}: {key} must come from the environment"


# --- the entry points the deployment adds ----------------------------------------------

@pytest.mark.integration
def test_bootstrap_creates_topics_and_tables(tansu, tmp_path, clean_env):
    from confluent_kafka.admin import AdminClient

    from infra.bootstrap import main
    from kibotos.warehouse import open_client
    from topics.catalogue import Catalogue

    prefix = f"t{uuid.uuid4().hex[:10]}."
    dsn = f"chdb://{tmp_path / 'chdb'}"
    for key, value in {"KIBOTOS_BOOTSTRAP_SERVERS": tansu.bootstrap, "KIBOTOS_TOPIC_PREFIX": prefix,
                       "KIBOTOS_TOPIC_PARTITIONS": "3", "KIBOTOS_CLICKHOUSE_DSN": dsn,
                       "KIBOTOS_OBJECT_STORE_URL": (tmp_path / "objects").as_uri()}.items():
        clean_env.setenv(key, value)
    assert main([]) == 0
    assert main([]) == 0  # idempotent
    topics = AdminClient({"bootstrap.servers": tansu.bootstrap}).list_topics(timeout=10).topics
    for spec in Catalogue(prefix=prefix, partitions=3).all():
        assert len(topics[spec.name].partitions) == 3, spec.name
    client = open_client(dsn)
    try:
        tables = {r[0] for r in client.query("SHOW TABLES FROM kibotos").result_rows}
    finally:
        client.close()
    assert {"submissions", "gate_results", "verification_reports", "points_ledger", "ingest_receipts"} <= tables


def test_bootstrap_refuses_unsafe_production_settings(clean_env, capsys):
    from infra.bootstrap import main

    clean_env.setenv("KIBOTOS_MODE", "production")
    assert main([]) == 1
    assert "KIBOTOS_BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_sink_process_needs_a_broker(clean_env):
    from streams.sink import main

    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def _serve_until_metric(module: str, args: list[str], env: dict[str, str], needle: str) -> str:
    """Run ``python -m module --metrics-port P *args`` until its /metrics shows ``needle``,
    then SIGTERM it; asserts a clean exit and returns what it printed."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIBOTOS_")} | {"KIBOTOS_LOG_FORMAT": "text"} | env
    proc = subprocess.Popen([sys.executable, "-m", module, "--metrics-port", str(port), *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, seen = time.monotonic() + 60, ""
        while needle not in seen:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else seen
            time.sleep(0.3)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    seen = resp.read().decode()
            except OSError:
                pass
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        return proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_sink_process_writes_the_warehouse_and_stops_on_sigterm(tansu, catalogue, tmp_path):
    from confluent_kafka import Producer

    from infra.migrate import apply_migrations
    from kibotos.warehouse import balances, open_client
    from tests.fixtures.events import ledger_entry

    dsn = f"chdb://{tmp_path / 'chdb'}"
    client = open_client(dsn)
    apply_migrations(client)  # the bootstrap job's part
    client.close()
    spec = catalogue.ledger_entries
    producer = Producer({"bootstrap.servers": tansu.bootstrap})
    producer.produce(spec.name, key=b"sub-1", value=spec.serialize(ledger_entry("sub-1", "alice", 7.0)))
    assert producer.flush(10) == 0
    env = {"KIBOTOS_BOOTSTRAP_SERVERS": tansu.bootstrap, "KIBOTOS_TOPIC_PREFIX": catalogue.prefix,
           "KIBOTOS_CLICKHOUSE_DSN": dsn}
    _serve_until_metric("streams.sink", ["--flush-interval", "0.2"], env,
                        'processor="clickhouse-sink",topic="ledger.entries"} 1.0')
    client = open_client(dsn)
    try:
        assert balances(client) == [{"miner_id": "alice", "points": 7.0, "entries": 1}]
    finally:
        client.close()


@pytest.mark.parametrize("module", ["streams.novelty_worker", "gpu_consumers.worker"])
def test_consumer_processes_need_a_broker(clean_env, module):
    import importlib

    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main([])
    assert info.value.code == 2


@pytest.mark.integration
def test_novelty_process_serves_metrics_and_stops_on_sigterm(tansu, catalogue, tmp_path):
    from infra.migrate import apply_migrations
    from kibotos.warehouse import open_client

    dsn = f"chdb://{tmp_path / 'chdb'}"
    client = open_client(dsn)
    apply_migrations(client)
    client.close()
    env = {"KIBOTOS_BOOTSTRAP_SERVERS": tansu.bootstrap, "KIBOTOS_TOPIC_PREFIX": catalogue.prefix,
           "KIBOTOS_CLICKHOUSE_DSN": dsn, "KIBOTOS_HOME": str(tmp_path / "home")}
    out = _serve_until_metric("streams.novelty_worker", ["--loglevel", "INFO"], env, "python_info")
    assert f"consuming as kibotos-{catalogue.prefix}novelty" in out
