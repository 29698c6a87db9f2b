"""deploy/config.yaml: loading and checking it, and the values derived from it (DNS names, image paths,
replica counts, the Snowflake CLI template variables of sql/*.sql)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = Path(__file__).with_name("config.yaml")
SPEC_DIR = ROOT / "spec"
SQL_DIR = ROOT / "sql"

IDENTIFIER = re.compile(r"[A-Z][A-Z0-9_]*")  # unquoted Snowflake identifier, as written in config.yaml
SPCS_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")  # container, volume, endpoint names
# The GPU instance families of SPCS compute pools, by the account's cloud, with their GPUs per node. Each cloud has
# its own: GPU_NV_S is AWS only, Azure has GPU_NV_XS/SM/2M/3M/SL, Google Cloud GPU_GCP_NV_*. The INSTANCE_FAMILY table
# of CREATE COMPUTE POOL, https://docs.snowflake.com/en/sql-reference/sql/create-compute-pool, and of
# https://docs.snowflake.com/en/developer-guide/snowpark-container-services/working-with-compute-pool (some are not in
# every region of their cloud: SHOW COMPUTE POOL INSTANCE FAMILIES lists the account's own).
GPU_FAMILIES: dict[str, dict[str, int]] = {
    "aws": {"GPU_NV_S": 1, "GPU_NV_M": 4, "GPU_NV_L": 8},
    "azure": {"GPU_NV_XS": 1, "GPU_NV_SM": 1, "GPU_NV_2M": 2, "GPU_NV_3M": 2, "GPU_NV_SL": 4},
    "gcp": {"GPU_GCP_NV_L4_1_24G": 1, "GPU_GCP_NV_L4_4_24G": 4, "GPU_GCP_NV_A100_8_40G": 8},
}
CLOUDS = tuple(GPU_FAMILIES)  # snowflake.cloud of deploy/config.yaml
GPUS_PER_NODE = {family: gpus for families in GPU_FAMILIES.values() for family, gpus in families.items()}
# Variables sql/07_secrets.sql takes from the caller, not from config.yaml: secret values, which deploy/secrets_sql.py
# fills in (from the environment, or generated), never `snow sql -D` (a command-line argument is visible to others).
RUNTIME_SQL_VARS = ("api_token", "ray_auth_token")
TEMPLATE = re.compile(r"<%\s*(\w+)\s*%>")  # Snowflake CLI template variable: <% name %>


class ConfigError(ValueError):
    """deploy/config.yaml is inconsistent."""


def load(path: Path = CONFIG_PATH) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    check(config)
    return config


def get(config: dict[str, Any], dotted: str) -> Any:
    """A value by dotted path, e.g. `services.gateway.name`."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"deploy/config.yaml has no {dotted!r}")
        value = value[part]
    return value


def dns_name(service: str) -> str:
    """The short DNS name SPCS gives a service: its name in lower case, `_` replaced by `-`."""
    return service.lower().replace("_", "-")


def image_name(config: dict[str, Any], which: str) -> str:
    """The local docker tag, `<name>:<tag>`."""
    image = config["images"][which]
    return f"{image['name']}:{image['tag']}"


def image_path(config: dict[str, Any], which: str) -> str:
    """The image as a spec names it: /<database>/<schema>/<repository>/<name>:<tag>, lower case."""
    sf = config["snowflake"]
    repo = "/".join(part.lower() for part in (sf["database"], sf["schema"], config["image_repository"]))
    return f"/{repo}/{image_name(config, which)}"


def size_bytes(size: str) -> int:
    """A spec size such as `6Gi`, `512Mi` or `2G` in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]i?)?", str(size))
    if not match:
        raise ConfigError(f"deploy/config.yaml: {size!r} is not a size like 6Gi")
    unit = match.group(2) or ""
    base = 1024 if unit.endswith("i") else 1000
    return int(float(match.group(1)) * base ** ("KMGT".index(unit[0]) + 1 if unit else 0))


def object_store_bytes(service: dict[str, Any]) -> int:
    """Ray's object store lives in /dev/shm: most of that memory volume, the rest for Ray's own use."""
    return int(size_bytes(service["shm_size"]) * 0.8)


def whisper_replicas(config: dict[str, Any]) -> tuple[int, int]:
    """(floor, ceiling) of the Whisper replicas: one per GPU of the worker service's MIN_INSTANCES and
    MAX_INSTANCES (service/inference/scaling.py keeps them at most the GPUs that are up)."""
    worker = config["services"]["worker"]
    return worker["min_instances"] * worker["gpus_per_instance"], worker["max_instances"] * worker["gpus_per_instance"]


def qualified(config: dict[str, Any], name: str) -> str:
    sf = config["snowflake"]
    return f"{sf['database']}.{sf['schema']}.{name}"


def sql_vars(config: dict[str, Any]) -> dict[str, str]:
    """The template variables of sql/*.sql (`<% name %>`), as `make deploy` passes them with `-D name=value`."""
    sf, roles, pools, services = config["snowflake"], config["roles"], config["compute_pools"], config["services"]
    values: dict[str, Any] = {
        "database": sf["database"],
        "schema": sf["schema"],
        "warehouse": sf["warehouse"],
        "warehouse_size": sf["warehouse_size"],
        "admin_role": roles["admin"],
        "deployer_role": roles["deployer"],
        "analyst_role": roles["analyst"],
        "image_repository": config["image_repository"],
        "spec_stage": config["spec_stage"],
        "api_token_secret": config["secrets"]["api_token"],
        "ray_auth_token_secret": config["secrets"]["ray_auth_token"],
        "hf_network_rule": config["external_access"]["network_rule"],
        "hf_integration": config["external_access"]["integration"],
        "gateway_service_role": services["gateway"]["service_role"],
    }
    for key, pool in pools.items():
        values[f"{key}_pool"] = pool["name"]
        for field in ("instance_family", "min_nodes", "max_nodes", "auto_suspend_secs"):
            values[f"{key}_pool_{field}"] = pool[field]
    for key, service in services.items():
        values[f"{key}_service"] = service["name"]
        values[f"{key}_compute_pool"] = pools[service["pool"]]["name"]
        values[f"{key}_spec"] = spec_file(key)
        values[f"{key}_min_instances"] = service["min_instances"]
        values[f"{key}_max_instances"] = service["max_instances"]
    out = {k: str(v) for k, v in values.items()}
    for key, value in out.items():
        if not re.fullmatch(r"[\w.-]+", value):
            raise ConfigError(f"SQL variable {key}={value!r}: only letters, digits, `_`, `.` and `-` are allowed")
    return out


def spec_file(service_key: str) -> str:
    return {"gateway": "gateway.yaml", "head": "ray-head.yaml", "worker": "ray-worker.yaml"}[service_key]


def fill_sql(text: str, variables: dict[str, str]) -> str:
    """Substitute `<% name %>` the way `snow sql -D name=value` does; an unknown name is an error."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in variables:
            raise KeyError(f"SQL template variable <% {match.group(1)} %> has no value")
        return variables[match.group(1)]

    return TEMPLATE.sub(value, text)


def check(config: dict[str, Any]) -> None:
    """The rules the renderer and the SQL rely on; raises ConfigError with the first one broken."""

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"deploy/config.yaml: {message}")

    sf, services, pools, ports = config["snowflake"], config["services"], config["compute_pools"], config["ports"]
    names = [sf["database"], sf["schema"], sf["warehouse"], config["image_repository"], config["spec_stage"]]
    names += list(config["roles"].values()) + list(config["secrets"].values()) + list(config["stages"])
    names += [p["name"] for p in pools.values()] + [s["name"] for s in services.values()]
    names += [config["external_access"]["network_rule"], config["external_access"]["integration"]]
    for name in names:
        require(bool(IDENTIFIER.fullmatch(name)), f"{name!r} is not an upper-case unquoted identifier")
    require(set(services) == {"gateway", "head", "worker"}, "services must be gateway, head and worker")
    require(set(config["images"]) == {"gateway", "ray"}, "images must be gateway and ray")
    for key, service in services.items():
        require(service["pool"] in pools, f"services.{key}.pool {service['pool']!r} is not a compute pool")
        require(service["image"] in config["images"], f"services.{key}.image {service['image']!r} is unknown")
        require(bool(SPCS_NAME.fullmatch(service["container"])), f"services.{key}.container is not a valid name")
        require(1 <= service["min_instances"] <= service["max_instances"], f"services.{key}: need 1 <= min <= max")
    for key in ("gateway", "head"):
        require(services[key]["max_instances"] == 1, f"services.{key} runs exactly one instance")
    require(bool(SPCS_NAME.fullmatch(services["gateway"]["endpoint"])), "services.gateway.endpoint is not valid")
    functions_endpoint = services["gateway"].get("functions_endpoint", "")
    require(bool(SPCS_NAME.fullmatch(functions_endpoint)), "services.gateway.functions_endpoint is not valid")
    require(functions_endpoint != services["gateway"]["endpoint"], "the gateway's two endpoints need two names")
    cloud = sf.get("cloud")
    require(cloud in GPU_FAMILIES, f"snowflake.cloud is {cloud!r}, not the account's cloud: {', '.join(CLOUDS)}")
    families = GPU_FAMILIES[cloud]
    for key, pool in pools.items():
        family = pool["instance_family"]
        if family.startswith("GPU") or key == services["worker"]["pool"]:
            require(
                family in families,
                f"compute_pools.{key}.instance_family {family} is not a GPU instance family on {cloud} "
                f"(snowflake.cloud); {cloud} has {', '.join(families)}",
            )
    worker, gpu_pool = services["worker"], pools[services["worker"]["pool"]]
    per_node = families[gpu_pool["instance_family"]]
    require(worker["gpus_per_instance"] >= 1, "services.worker.gpus_per_instance must be at least 1")
    require(worker["gpus_per_instance"] <= per_node, f"{gpu_pool['instance_family']} has {per_node} GPU(s)")
    per_pool = gpu_pool["max_nodes"] * (per_node // worker["gpus_per_instance"])
    require(worker["max_instances"] <= per_pool, "the GPU pool's max_nodes cannot hold max_instances workers")
    scaling = config["scaling"]
    decoders = scaling["decoders"]
    require(1 <= decoders["min"] <= decoders["max"], "scaling.decoders: need 1 <= min <= max")
    require(scaling["target_windows_per_replica"] >= 1, "scaling.target_windows_per_replica must be at least 1")
    require(0 <= scaling["drain_s"] <= 300, "scaling.drain_s must be 0..300 seconds")
    for pool in pools.values():
        require(1 <= pool["min_nodes"] <= pool["max_nodes"], f"compute pool {pool['name']}: need 1 <= min <= max")
    single = [v for k, v in ports.items() if k not in ("min_worker", "max_worker")]
    require(len(set(single)) == len(single), "ports must differ")
    require(all(1024 <= p <= 65535 for p in ports.values()), "ports must be in 1024..65535")
    require(ports["min_worker"] < ports["max_worker"], "ports.min_worker must be below ports.max_worker")
    overlap = [p for p in single if ports["min_worker"] <= p <= ports["max_worker"]]
    require(not overlap, f"ports {overlap} fall inside the worker port range")
    for key in ("head", "worker"):
        require(object_store_bytes(services[key]) >= 256 * 2**20, f"services.{key}.shm_size must be at least 320Mi")
    mounts = config["stages"].values()
    require(all(str(m).startswith("/") for m in mounts), "stage mounts must be absolute paths")
    on_stage = any(config["model"].startswith(f"{m}/") for m in mounts)
    require(on_stage or config["external_access"]["enabled"], "model must be on a stage mount without egress")
