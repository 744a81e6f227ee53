"""docker-compose.yml cannot drift from the code: its services, images, health checks, pool
groups and the environment the config loader reads are checked against the source."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from pvekvm import messaging
from pvekvm.config import ROOT
from tests import services
from workers.consumer import all_pools

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
APP_SERVICES = ["init", "intake", "workers", "workers-tasks", "scheduler", "api"]
WORKER_SERVICES = ["intake", "workers", "workers-tasks"]
UPSTREAM = {
    "rabbitmq": ("PVEKVM_RABBITMQ_IMAGE", "rabbitmq:3.13-management"),
    "mariadb": ("PVEKVM_MARIADB_IMAGE", "mariadb:10.11"),
    "powerdns": ("PVEKVM_PDNS_IMAGE", "powerdns/pdns-auth-48"),
    "mailcatcher": ("PVEKVM_MAIL_IMAGE", "axllent/mailpit"),
    "pvesim": ("PVEKVM_APP_IMAGE", "pvekvm:latest"),
    **{name: ("PVEKVM_APP_IMAGE", "pvekvm:latest") for name in APP_SERVICES},
}
VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def setting(value: str) -> tuple[str, str]:
    """``${NAME:-default}`` → (NAME, default)."""
    m = VAR.fullmatch(value)
    assert m, f"{value!r} is not a ${{NAME:-default}} setting"
    return m.group(1), m.group(2) or ""


def env_names_read_by_config() -> set[str]:
    """Every environment name pvekvm/config.py reads (env.get/env[...]/os.environ.get)."""
    tree = ast.parse((ROOT / "pvekvm" / "config.py").read_text())
    names = set()
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "get" and node.args:
            owner = ast.unparse(node.func.value)
            if owner in ("env", "os.environ", "environ"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("env", "os.environ"):
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
    return names


def test_the_production_services_and_demo_profile_are_there():
    for name in ["rabbitmq", "mariadb", "powerdns", *APP_SERVICES, "pvesim", "mailcatcher"]:
        assert name in SERVICES, f"service {name} missing"
    assert SERVICES["pvesim"]["profiles"] == ["demo"]
    assert SERVICES["mailcatcher"]["profiles"] == ["demo"]
    assert SERVICES["api"]["profiles"] == ["api"]
    for name in ["rabbitmq", "mariadb", "powerdns", "intake", "workers", "scheduler"]:
        assert "profiles" not in SERVICES[name], f"{name} must start without a profile"


def test_every_service_uses_the_host_network_and_publishes_no_ports():
    for name, svc in SERVICES.items():
        assert svc.get("network_mode") == "host", name
        assert "ports" not in svc and "networks" not in svc, name


def test_image_names_are_settings_defaulting_to_the_upstream_images():
    for name, (variable, upstream) in UPSTREAM.items():
        assert setting(SERVICES[name]["image"]) == (variable, upstream), name
    assert SERVICES["workers"]["build"]["context"] == "."
    assert (ROOT / "Dockerfile").is_file()
    assert setting(SERVICES["workers"]["build"]["args"]["PYTHON_IMAGE"]) == (
        "PVEKVM_PYTHON_IMAGE", "python:3.11-slim-bookworm")


def test_the_local_images_the_scripts_build_are_the_ones_the_tests_and_stack_use():
    lib = (ROOT / "scripts" / "containers.sh").read_text()
    local = dict(re.findall(r"\[(\w+)\]=(pvekvm-local/\S+)", lib))
    wanted = {name: local[name] for name in ("rabbitmq", "mariadb", "powerdns")}
    assert wanted == services.IMAGES
    exported = set(re.findall(r"export (PVEKVM_\w+_IMAGE)=", lib))
    assert {variable for variable, _ in UPSTREAM.values()} | {"PVEKVM_PYTHON_IMAGE"} <= exported
    for name in ("rabbitmq", "mariadb", "powerdns", "mailcatcher", "python"):
        assert (ROOT / "images" / name / "Dockerfile").is_file()


def test_infrastructure_and_http_services_have_health_checks():
    for name in ["rabbitmq", "mariadb", "powerdns", "pvesim", "api"]:
        test = SERVICES[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    # mailpit and the local mail catcher carry their own HEALTHCHECK
    assert "HEALTHCHECK" in (ROOT / "images" / "mailcatcher" / "Dockerfile").read_text()


def test_app_services_wait_for_a_healthy_broker_and_database():
    for name in APP_SERVICES:
        deps = SERVICES[name]["depends_on"]
        assert deps["rabbitmq"]["condition"] == deps["mariadb"]["condition"] == "service_healthy"


def test_app_services_pass_every_setting_the_config_loader_reads_from_the_environment():
    wanted = env_names_read_by_config()
    assert {"DATABASE_URL", "AMQP_URL", "PVE_CONNECTION_FILE", "SMTP_HOST"} <= wanted
    for name in APP_SERVICES:
        missing = wanted - set(SERVICES[name]["environment"])
        assert not missing, f"{name} does not set {sorted(missing)} (read by pvekvm/config.py)"


def test_the_worker_groups_consume_every_pool_exactly_once():
    consumed: list[str] = []
    for name in WORKER_SERVICES:
        cmd = SERVICES[name]["command"]
        assert cmd[:3] == ["python", "-m", "workers"] and "container_name" not in SERVICES[name]
        consumed += cmd[cmd.index("--pools") + 1].split(",")
    assert sorted(consumed) == sorted(all_pools())
    assert set(messaging.POOLS) < set(consumed)


def test_mariadb_loads_the_schema_on_first_start():
    assert "./schema.sql:/docker-entrypoint-initdb.d/10-schema.sql:ro" in SERVICES["mariadb"][
        "volumes"]
    assert setting(SERVICES["mariadb"]["environment"]["MARIADB_DATABASE"])[1] == "pvekvm"


@pytest.mark.parametrize("name", ["rabbitmq", "mariadb", "powerdns", "pvesim", "api"])
def test_listening_ports_are_settings(name):
    """Host networking: each listener's port is a setting, so a machine's own services (or a
    second stack) never collide with it."""
    text = yaml.safe_dump(SERVICES[name])
    assert re.search(r"\$\{PVEKVM_\w*PORT:-\d+\}", text), name


def test_default_ports_do_not_collide():
    text = (ROOT / "docker-compose.yml").read_text()
    defaults: dict[str, str] = {}
    for variable, default in VAR.findall(text):
        if variable.endswith("_PORT") and default:
            defaults.setdefault(variable, default)
    ports = list(defaults.values())
    assert len(ports) == len(set(ports)), defaults
