"""The SPCS deployment: spec/*.yaml follow the specification rules they rely on, agree with each other, with
deploy/config.yaml, with the SQL scripts and with the service's Settings; the committed specs are current;
`make -n deploy` shows every step. No network, no Snowflake account."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, SecretStr
from sqlglot import exp

from deploy import render, specs
from deploy.config import (
    RUNTIME_SQL_VARS,
    SPCS_NAME,
    ConfigError,
    check,
    dns_name,
    fill_sql,
    image_path,
    load,
    size_bytes,
    spec_file,
    sql_vars,
    whisper_replicas,
)
from service.config import Settings, setting_fields
from service.inference.runner import ROUTE_PREFIX
from tests.unit.test_sql import SQL_DIR, command_text, created, parse, properties, service_functions, signature

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load()
SPEC_NAMES = {key: spec_file(key) for key in ("gateway", "head", "worker")}
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSPHRASE|SECRET|PRIVATE_KEY", re.IGNORECASE)


def spec(key: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "spec" / SPEC_NAMES[key]).read_text())


def container(key: str) -> dict[str, Any]:
    (only,) = spec(key)["spec"]["containers"]
    return only


def endpoints(key: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in spec(key)["spec"].get("endpoints", [])}


def endpoint_ports(key: str) -> set[int]:
    ports: set[int] = set()
    for e in endpoints(key).values():
        if "portRange" in e:
            low, high = map(int, e["portRange"].split("-"))
            ports |= set(range(low, high + 1))
        else:
            ports.add(e["port"])
    return ports


def ray_start_flags(key: str) -> dict[str, str]:
    """The `--flag=value` options of the `ray start` line in a Ray container's script."""
    script = container(key)["command"][-1]
    (line,) = [line for line in script.splitlines() if line.strip().startswith("ray start")]
    return dict(arg.split("=", 1) if "=" in arg else (arg, "") for arg in shlex.split(line)[2:])


def sql_commands(name: str) -> list[str]:
    return [command_text(s) for s in parse(SQL_DIR / name) if isinstance(s, exp.Command)]


@pytest.mark.parametrize("key", SPEC_NAMES)
def test_spec_has_required_fields_and_valid_names(key: str) -> None:
    body = spec(key)
    assert set(body) <= {"spec", "serviceRoles"}
    assert set(body["spec"]) <= {"containers", "endpoints", "volumes", "logExporters"}
    assert body["spec"]["containers"], "spec.containers is required"
    for c in body["spec"]["containers"]:
        assert SPCS_NAME.fullmatch(c["name"]), c["name"]
        assert c["image"] == image_path(CONFIG, CONFIG["services"][key]["image"])
        assert all(isinstance(v, str) for v in c.get("env", {}).values()), "env values must be strings"
    for e in body["spec"].get("endpoints", []):
        assert SPCS_NAME.fullmatch(e["name"]), e["name"]
        assert ("port" in e) != ("portRange" in e), f"{e['name']}: port or portRange"
        assert e.get("protocol", "HTTP") in {"TCP", "HTTP"}
    for v in body["spec"].get("volumes", []):
        assert SPCS_NAME.fullmatch(v["name"]), v["name"]
        assert v["source"] in {"local", "memory", "block", "stage"}, v  # "@STAGE" is the deprecated stage form
        assert v["source"] != "stage" or v["stageConfig"]["name"].startswith("@"), v
        assert v["source"] not in {"memory", "block"} or v.get("size"), f"{v['name']}: size is required"


@pytest.mark.parametrize("key", SPEC_NAMES)
def test_volume_mounts_name_declared_volumes(key: str) -> None:
    declared = {v["name"] for v in spec(key)["spec"].get("volumes", [])}
    for c in spec(key)["spec"]["containers"]:
        mounted = [m["name"] for m in c.get("volumeMounts", [])]
        assert set(mounted) <= declared, f"{c['name']} mounts undeclared volumes {set(mounted) - declared}"
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert len(set(paths)) == len(paths), "two volumes on one path"


def test_stage_volumes_name_stages_that_02_creates() -> None:
    stages = created(SQL_DIR / "02_stages.sql", {"STAGE"})
    for key in SPEC_NAMES:
        for v in spec(key)["spec"].get("volumes", []):
            if v["source"] == "stage":
                name = v["stageConfig"]["name"]
                assert name[1:] in stages, f"{key}: stage {name} is not created by 02_stages.sql"


def test_gpus_requested_equal_limits_and_match_ray() -> None:
    for key in SPEC_NAMES:
        resources = container(key)["resources"]
        requests, limits = resources["requests"], resources["limits"]
        assert requests.get("nvidia.com/gpu") == limits.get("nvidia.com/gpu"), f"{key}: GPU requests != limits"
    gpus = CONFIG["services"]["worker"]["gpus_per_instance"]
    assert container("worker")["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert ray_start_flags("worker")["--num-gpus"] == str(gpus)
    assert ray_start_flags("head")["--num-gpus"] == "0"
    assert "nvidia.com/gpu" not in container("head")["resources"]["limits"]
    env = container("head")["env"]
    assert env["SPCS_WHISPER_WHISPER_NUM_GPUS"] == "1"
    worker = CONFIG["services"]["worker"]
    floor, ceiling = int(env["SPCS_WHISPER_WHISPER_MIN_REPLICAS"]), int(env["SPCS_WHISPER_WHISPER_MAX_REPLICAS"])
    assert (floor, ceiling) == whisper_replicas(CONFIG)
    assert (floor, ceiling) == (worker["min_instances"] * gpus, worker["max_instances"] * gpus)


def test_replica_autoscaling_follows_the_worker_instances_and_workers_drain_on_sigterm() -> None:
    """Whisper replicas between MIN_INSTANCES × GPUs and MAX_INSTANCES × GPUs (never more than the GPUs up: the
    policy), Decoders from the `scaling` section; a worker SPCS stops is drained (Serve moves its replicas) before
    Ray stops, within the time it is given."""
    env = container("head")["env"]
    scaling = CONFIG["scaling"]
    settings = Settings(_env_file=None, **{k.removeprefix("SPCS_WHISPER_").lower(): v for k, v in env.items()
                                          if k.startswith("SPCS_WHISPER_")})  # fmt: skip
    assert settings.inference.whisper_bounds == whisper_replicas(CONFIG)
    assert (settings.inference.decoder_min_replicas, settings.inference.decoder_max_replicas) == (
        scaling["decoders"]["min"],
        scaling["decoders"]["max"],
    )
    assert settings.inference.whisper_target_windows == scaling["target_windows_per_replica"]
    pool = CONFIG["compute_pools"][CONFIG["services"]["worker"]["pool"]]
    assert pool["max_nodes"] >= CONFIG["services"]["worker"]["max_instances"]
    script = container("worker")["command"][-1]
    assert "trap drain TERM" in script and "ray drain-node" in script
    assert f"--deadline-remaining-seconds={scaling['drain_s']}" in script
    assert scaling["drain_s"] < 30  # under Kubernetes' default grace period: SPCS documents none
    assert "wait $!" in script  # the shell waits on Ray in the background, so the trap runs at once


def test_service_functions_call_the_non_public_endpoint() -> None:
    """Two doors: the SQL functions call `functions` (not public: only Snowflake and services of the same owner
    reach it), the public endpoint `api` serves the API and web page; the gateway listens on both ports."""
    gateway = CONFIG["services"]["gateway"]
    functions = service_functions()
    assert functions
    for create in functions.values():
        props = properties(create)
        assert props["SERVICE"].sql("snowflake") == gateway["name"]
        assert props["ENDPOINT"].sql("snowflake").lower() == gateway["functions_endpoint"]
    env = container("gateway")["env"]
    api = endpoints("gateway")[gateway["endpoint"]]
    assert api["public"] is True and api["protocol"] == "HTTP"
    assert api["port"] == int(env["SPCS_WHISPER_PORT"])
    door = endpoints("gateway")[gateway["functions_endpoint"]]
    assert door["public"] is False and door["protocol"] == "HTTP"  # service functions speak HTTP
    assert door["port"] == int(env["SPCS_WHISPER_FUNCTIONS_PORT"]) != api["port"]
    assert set(endpoints("gateway")) == {api["name"], door["name"]}
    assert container("gateway")["readinessProbe"] == {"port": api["port"], "path": "/readyz"}
    roles = spec("gateway")["serviceRoles"]
    assert roles == [{"name": gateway["service_role"], "endpoints": [api["name"], door["name"]]}]
    for key in ("head", "worker"):  # Ray's ports are for the other services only
        assert not any(e.get("public") for e in endpoints(key).values()), key


@pytest.mark.parametrize("key", ["head", "worker"])
def test_every_port_ray_opens_is_an_endpoint(key: str) -> None:
    flags = ray_start_flags(key)
    opened = {int(v) for f, v in flags.items() if f.endswith("-port") or f == "--port"}
    declared = endpoint_ports(key)
    assert opened <= declared, f"ray start opens undeclared ports {sorted(opened - declared)}"
    low, high = int(flags["--min-worker-port"]), int(flags["--max-worker-port"])
    assert set(range(low, high + 1)) <= declared
    single = {e["port"] for e in endpoints(key).values() if "port" in e}
    serve = {int(container(key)["env"]["SPCS_WHISPER_SERVE_PORT"])} if key == "head" else set()
    assert single == (opened - set(range(low, high + 1))) | serve, "an endpoint no process listens on"
    # Head and workers use the same fixed node ports, so each node's Ray processes are reachable.
    node_flags = {flag: flags[flag] for flag in specs.NODE_PORTS}
    assert node_flags == {flag: ray_start_flags("head")[flag] for flag in specs.NODE_PORTS}


@pytest.mark.parametrize("key", ["head", "worker"])
def test_object_store_fits_the_shared_memory_volume(key: str) -> None:
    shm = {m["mountPath"]: m["name"] for m in container(key)["volumeMounts"]}["/dev/shm"]
    (volume,) = [v for v in spec(key)["spec"]["volumes"] if v["name"] == shm]
    assert volume["source"] == "memory"
    assert 0 < int(ray_start_flags(key)["--object-store-memory"]) < size_bytes(volume["size"])
    assert size_bytes("6Gi") == 6 * 2**30 and size_bytes("512M") == 512 * 10**6


def test_workers_join_the_head_by_its_dns_name() -> None:
    head = CONFIG["services"]["head"]["name"]
    assert ray_start_flags("worker")["--address"] == f"{dns_name(head)}:{ray_start_flags('head')['--port']}"
    assert "--block" in ray_start_flags("worker")
    assert dns_name("WHISPER_RAY_HEAD") == "whisper-ray-head"
    head_env = container("head")["env"]
    assert head_env["SPCS_WHISPER_RAY_ADDRESS"] == "auto" and head_env["SPCS_WHISPER_SERVE_HOST"] == "0.0.0.0"
    assert container("head")["command"][-1].rstrip().endswith("exec spcs-whisper ray-app")


def test_gateway_calls_the_serve_endpoint_of_the_head() -> None:
    url = urlsplit(container("gateway")["env"]["SPCS_WHISPER_SERVE_URL"])
    assert url.scheme == "http"
    assert url.hostname == dns_name(CONFIG["services"]["head"]["name"])
    assert url.port == endpoints("head")["serve"]["port"] == int(container("head")["env"]["SPCS_WHISPER_SERVE_PORT"])
    assert url.path == ROUTE_PREFIX


def test_stage_mounts_setting_agrees_with_the_volume_mounts() -> None:
    key = "gateway"  # the one container that reads stage files by their @STAGE/path names
    mounts = json.loads(container(key)["env"]["SPCS_WHISPER_STAGE_MOUNTS"])
    sources = {v["name"]: v.get("stageConfig", {}).get("name", "") for v in spec(key)["spec"]["volumes"]}
    stages = {
        sources[m["name"]][1:]: m["mountPath"] for m in container(key)["volumeMounts"] if sources[m["name"]][:1] == "@"
    }
    assert mounts == stages
    assert all(CONFIG["stages"][name] == path for name, path in mounts.items())


def test_model_is_on_a_stage_the_ray_nodes_mount() -> None:
    model = container("head")["env"]["SPCS_WHISPER_MODEL"]
    assert model == CONFIG["model"] == container("gateway")["env"]["SPCS_WHISPER_MODEL"]
    for key in ("head", "worker"):
        paths = [m["mountPath"] for m in container(key)["volumeMounts"]]
        loads = key == "worker"  # the Whisper replicas load the model, and they run on the GPU workers
        assert any(model.startswith(p + "/") for p in paths) == loads, f"{key}: {paths}"
        assert container(key)["env"].get("HF_HUB_OFFLINE") == (
            "1" if not CONFIG["external_access"]["enabled"] else None
        )


def known_env_names() -> set[str]:
    names = set()
    for name, field in setting_fields().items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {a for a in alias.choices if isinstance(a, str)}
        else:
            names.add(alias if isinstance(alias, str) else f"SPCS_WHISPER_{name.upper()}")
    return {n for n in names if n.startswith("SPCS_WHISPER_")}


@pytest.mark.parametrize("key", ["gateway", "head"])
def test_settings_env_vars_are_real_settings(key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings ignores unknown SPCS_WHISPER_* variables, so a typo would pass silently: check the names, then
    build Settings from the container's environment and check the values it reads."""
    env = container(key)["env"]
    names = {n for n in env if n.startswith("SPCS_WHISPER_")}
    assert names <= known_env_names(), f"not settings: {sorted(names - known_env_names())}"
    for name in [*os.environ]:
        if name.startswith(("SPCS_WHISPER_", "SNOWFLAKE_")):
            monkeypatch.delenv(name)
    for name in names:
        monkeypatch.setenv(name, env[name])
    monkeypatch.chdir(tmp_path)  # no .env file
    settings = Settings()
    mounts = json.loads(env.get("SPCS_WHISPER_STAGE_MOUNTS", "{}"))
    assert settings.gateway.stage_mounts == {k: Path(v) for k, v in mounts.items()}
    assert settings.inference.model == CONFIG["model"]
    if key == "gateway":
        assert settings.gateway.store == "snowflake" and settings.gateway.host == "0.0.0.0"
        assert settings.gateway.port == CONFIG["ports"]["gateway"]
        assert settings.effective_serve_url == env["SPCS_WHISPER_SERVE_URL"]
        assert str(settings.gateway.data_dir) == CONFIG["services"]["gateway"]["data_volume"]["mount"]
        assert settings.snowflake.snowflake_warehouse == CONFIG["snowflake"]["warehouse"]
    else:
        assert settings.inference.engine == CONFIG["engine"] and settings.inference.ray_address == "auto"
        assert settings.inference.whisper_num_gpus == 1 and settings.inference.whisper_bounds == whisper_replicas(
            CONFIG
        )
        assert (settings.inference.serve_host, settings.inference.serve_port) == (
            "0.0.0.0",
            endpoints("head")["serve"]["port"],
        )


def test_secrets_come_from_snowflake_secrets_never_plain_env() -> None:
    secret_fields = {
        f"SPCS_WHISPER_{n.upper()}"
        for n, f in setting_fields().items()
        if f.annotation in (SecretStr, SecretStr | None)
    }
    assert "SPCS_WHISPER_API_TOKEN" in secret_fields
    created_secrets = {
        re.match(r"CREATE SECRET IF NOT EXISTS (\w+)", text).group(1)  # type: ignore[union-attr]
        for text in sql_commands("07_secrets.sql")
        if text.startswith("CREATE SECRET")
    }
    for key in SPEC_NAMES:
        c = container(key)
        plain = [n for n in c.get("env", {}) if n in secret_fields or SECRET_NAME.search(n)]
        assert not plain, f"{key}: secret as a plain env value: {plain}"
        for s in c.get("secrets", []):
            assert s["secretKeyRef"] == "secret_string" and "envVarName" in s
            assert s["snowflakeSecret"]["objectName"].split(".")[-1] in created_secrets
    by_var = {s["envVarName"] for s in container("gateway")["secrets"]}
    assert by_var == {"SPCS_WHISPER_API_TOKEN"}
    for key in ("head", "worker"):
        assert {s["envVarName"] for s in container(key)["secrets"]} == {"RAY_AUTH_TOKEN"}
        assert container(key)["env"]["RAY_AUTH_MODE"] == "token"


def test_committed_specs_are_current() -> None:
    assert render.stale() == [], "run `make render` (python -m deploy.render)"
    assert render.main(["--check"]) == 0
    for key in SPEC_NAMES:
        assert (ROOT / "spec" / SPEC_NAMES[key]).read_text().startswith("# GENERATED by `python -m deploy.render`")


def test_services_pools_and_spec_files_agree_with_config() -> None:
    made = {}
    for text in sql_commands("07_services.sql"):
        if m := re.match(
            r"CREATE SERVICE IF NOT EXISTS (\w+) IN COMPUTE POOL (\w+) FROM @(\w+) SPECIFICATION_FILE = '(.+?)'", text
        ):
            made[m.group(1)] = (m.group(2), m.group(3), m.group(4))
            assert re.search(r"MIN_INSTANCES = \d+ MAX_INSTANCES = \d+ QUERY_WAREHOUSE = \w+", text), text
    pools, services = CONFIG["compute_pools"], CONFIG["services"]
    expected = {s["name"]: (pools[s["pool"]]["name"], CONFIG["spec_stage"], SPEC_NAMES[k]) for k, s in services.items()}
    assert made == expected
    assert list(made) == [services[k]["name"] for k in ("head", "worker", "gateway")], (
        "head, then workers, then gateway"
    )
    families = {}
    for text in sql_commands("05_compute_pools.sql"):
        if m := re.match(r"CREATE COMPUTE POOL IF NOT EXISTS (\w+) .*INSTANCE_FAMILY = (\w+)", text):
            families[m.group(1)] = m.group(2)
    assert families == {p["name"]: p["instance_family"] for p in pools.values()}
    assert any(
        t == f"CREATE IMAGE REPOSITORY IF NOT EXISTS {CONFIG['image_repository']}"
        for t in sql_commands("04_image_repository.sql")
    )
    assert CONFIG["spec_stage"] in created(SQL_DIR / "04_image_repository.sql", {"STAGE"})
    assert sql_commands("09_upgrade_services.sql") == [
        f"ALTER SERVICE {n} FROM @{stage} SPECIFICATION_FILE = '{f}'" for n, (_, stage, f) in made.items()
    ]


def test_roles_and_grants_agree_with_config() -> None:
    roles = CONFIG["roles"]
    setup = sql_commands("00_setup.sql")
    assert f"CREATE ROLE IF NOT EXISTS {roles['deployer']}" in " | ".join(setup)
    assert f"CREATE ROLE IF NOT EXISTS {roles['analyst']}" in " | ".join(setup)
    made = {s.this.sql("snowflake"): s.kind for s in parse(SQL_DIR / "00_setup.sql") if isinstance(s, exp.Create)}
    sf = CONFIG["snowflake"]
    assert made == {
        sf["warehouse"]: "WAREHOUSE",
        sf["database"]: "DATABASE",
        f"{sf['database']}.{sf['schema']}": "SCHEMA",
    }
    grants = sql_commands("08_grants.sql")
    gateway = CONFIG["services"]["gateway"]
    assert f"GRANT SERVICE ROLE {gateway['name']}!{gateway['service_role']} TO ROLE {roles['analyst']}" in grants
    granted = {
        g.args["securable"].sql("snowflake") for g in parse(SQL_DIR / "08_grants.sql") if isinstance(g, exp.Grant)
    }
    admin_only = {"WHISPER_DRAIN"}  # make teardown's first step: the deployer's, never granted to analysts
    functions = {signature(name, types) for name, types in service_functions() if name not in admin_only}
    assert functions <= {g.upper() for g in granted}, "every analyst SQL function is granted to the analyst role"
    assert not any(name in g.upper() for g in granted for name in admin_only)
    objects = created(SQL_DIR / "01_tables.sql", {"TABLE", "VIEW"})
    # SELECT on them comes from 10_row_access.sql, once the row access policies are attached (never from 08).
    assert not set(objects) & {g.upper() for g in granted}, "08_grants.sql grants SELECT before the policies"
    scoped = {
        g.args["securable"].sql("snowflake") for g in parse(SQL_DIR / "10_row_access.sql") if isinstance(g, exp.Grant)
    }
    assert set(objects) <= {g.upper() for g in scoped}, "every result table and view is granted"


def test_sql_template_variables_all_have_values() -> None:
    variables = {**sql_vars(CONFIG), **dict.fromkeys(RUNTIME_SQL_VARS, "x")}
    used = set()
    for path in sorted(SQL_DIR.glob("*.sql")):
        fill_sql(path.read_text(), variables)  # raises on an unknown variable
        used |= set(re.findall(r"<%\s*(\w+)\s*%>", path.read_text()))
    assert set(RUNTIME_SQL_VARS) <= used
    with pytest.raises(KeyError):
        fill_sql("SELECT <% nope %>", variables)


def test_config_check_rejects_inconsistent_configs() -> None:
    def broken(change: str) -> dict[str, Any]:
        config = load()
        exec(change, {"c": config})
        return config

    for change in [
        "c['services']['head']['max_instances'] = 2",
        "c['services']['worker']['gpus_per_instance'] = 2",
        "c['ports']['dashboard'] = c['ports']['gcs']",
        "c['ports']['client'] = c['ports']['min_worker'] + 1",
        "c['snowflake']['database'] = 'whisper-db'",
        "c['model'] = 'openai/whisper-large-v3'",
        "c['services']['worker']['max_instances'] = 9",
        "c['snowflake']['cloud'] = 'azure'",  # GPU_NV_S is AWS only
        "c['snowflake']['cloud'] = 'oracle'",
        "c['compute_pools']['gpu']['instance_family'] = 'GPU_NV_XS'",  # an Azure family, config says aws
        "c['services']['gateway']['functions_endpoint'] = c['services']['gateway']['endpoint']",  # one door
        "c['ports']['functions'] = c['ports']['gateway']",
    ]:
        with pytest.raises(ConfigError):
            check(broken(change))


def test_make_dry_run_deploy_shows_every_step() -> None:
    run = subprocess.run(["make", "-n", "deploy"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for name in [
        "00_setup",
        "01_tables",
        "02_stages",
        "03_service_functions",
        "04_image_repository",
        "05_compute_pools",
        "06_external_access",
        "07_services",
        "07_worker_external_access",
        "08_grants",
        "10_row_access",
    ]:
        assert f"-f sql/{name}.sql" in out, name
    for name in SPEC_NAMES.values():
        assert f"spec/{name}" in out, name
    assert "deploy.render --check" in out and "docker push" in out and "image-registry login" in out
    steps = ["-m deploy.cloud", "sql/00_setup.sql", "sql/04_image_repository.sql", "sql/05_compute_pools.sql"]
    steps += ["docker push", "--secrets-sql", "sql/07_services.sql", "sql/03_service_functions.sql"]
    steps += ["sql/08_grants.sql", "sql/10_row_access.sql"]
    order = [out.index(step) for step in steps]
    assert order == sorted(order), "steps out of order: the account's cloud first, images before services"
    # sql/07_secrets.sql is filled in by deploy.render from the environment and read by snow from stdin (never -f
    # with -D values); the output, which echoes the statements, is discarded (test_rule_secrets_and_gpu_family.py).
    commands = out.replace("\\\n", " ").splitlines()
    (secrets,) = [c for c in commands if "--secrets-sql" in c]
    assert "--stdin" in secrets and secrets.rstrip().endswith(">/dev/null") and "SPCS_WHISPER_API_TOKEN" not in secrets


def test_images_are_built_from_the_dockerfiles_in_docker() -> None:
    for which, image in CONFIG["images"].items():
        assert (ROOT / image["dockerfile"]).is_file(), image["dockerfile"]
        assert SPCS_NAME.fullmatch(image["name"]) and re.fullmatch(r"[\w][\w.-]{0,127}", image["tag"]), which
    # The Ray image's default command is replaced by the spec's script, which needs a shell and the ray CLI.
    for key in ("head", "worker"):
        assert container(key)["command"][:2] == ["/bin/sh", "-c"]


def test_make_dry_run_of_the_other_deployment_targets() -> None:
    targets = ["images", "push", "upgrade", "status", "logs", "teardown", "render", "render-check"]
    run = subprocess.run(["make", "-n", *targets, "DROP_DATA=1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    for needle in [
        "docker/gateway.Dockerfile",
        "docker/ray.Dockerfile",
        "sql/09_upgrade_services.sql",
        "list-containers",
        "spcs service logs",
        "WHISPER_DRAIN",
        "sql/99_teardown_data.sql",
    ]:
        assert needle in run.stdout, needle
