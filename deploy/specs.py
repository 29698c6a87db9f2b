"""The three SPCS service specifications, built as plain dicts from deploy/config.yaml.

Spec syntax: https://docs.snowflake.com/developer-guide/snowpark-container-services/specification-reference
"""

from __future__ import annotations

import json
from typing import Any

from deploy.config import dns_name, image_path, object_store_bytes, qualified, spec_file, whisper_replicas

ROUTE_PREFIX = "/whisper"  # service/inference/runner.py serves the Ray Serve app under this prefix
HF_OFFLINE = {"HF_HUB_OFFLINE": "1"}  # no egress: a hub lookup would only hang until it times out

# `ray start` port flags -> (config.yaml ports key, endpoint name). Every one is declared as an endpoint.
NODE_PORTS = {
    "--node-manager-port": ("node_manager", "node-manager"),
    "--object-manager-port": ("object_manager", "object-manager"),
    "--metrics-export-port": ("metrics_export", "metrics"),
    "--dashboard-agent-grpc-port": ("dashboard_agent_grpc", "agent-grpc"),
    "--dashboard-agent-listen-port": ("dashboard_agent_listen", "agent-http"),
    "--runtime-env-agent-port": ("runtime_env_agent", "runtime-env"),
}
HEAD_PORTS = {
    "--port": ("gcs", "gcs"),
    "--ray-client-server-port": ("client", "client"),
    "--dashboard-port": ("dashboard", "dashboard"),
}
WORKER_RANGE = ("--min-worker-port", "--max-worker-port")


def build(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """spec file name -> spec."""
    return {
        spec_file("gateway"): gateway(config),
        spec_file("head"): head(config),
        spec_file("worker"): worker(config),
    }


def gateway(config: dict[str, Any]) -> dict[str, Any]:
    svc, ports, sf = config["services"]["gateway"], config["ports"], config["snowflake"]
    head = config["services"]["head"]
    stages = {"AUDIO_FILES_STAGE": config["stages"]["AUDIO_FILES_STAGE"]}  # it reads the files it transcribes
    env = {
        "SPCS_WHISPER_HOST": "0.0.0.0",
        "SPCS_WHISPER_PORT": str(ports["gateway"]),
        "SPCS_WHISPER_FUNCTIONS_PORT": str(ports["functions"]),
        "SPCS_WHISPER_DATA_DIR": svc["data_volume"]["mount"],
        "SPCS_WHISPER_STORE": "snowflake",
        "SPCS_WHISPER_SNOWFLAKE_WAREHOUSE": sf["warehouse"],
        "SPCS_WHISPER_STAGE_MOUNTS": stage_mounts_json(stages),
        "SPCS_WHISPER_SERVE_URL": f"http://{dns_name(head['name'])}:{ports['serve']}{ROUTE_PREFIX}",
        "SPCS_WHISPER_MODEL": config["model"],
        # The deployer role may call WHISPER_DRAIN (make teardown); service functions send the caller's role.
        "SPCS_WHISPER_ADMIN_ROLE": config["roles"]["deployer"],
    }
    container = {
        "name": svc["container"],
        "image": image_path(config, svc["image"]),
        "env": dict(sorted(env.items())),
        "readinessProbe": {"port": ports["gateway"], "path": "/readyz"},
        "volumeMounts": [{"name": "data", "mountPath": svc["data_volume"]["mount"]}, *stage_mounts(stages)],
        "resources": svc["resources"],
        "secrets": [secret(config, config["secrets"]["api_token"], "SPCS_WHISPER_API_TOKEN")],
    }
    volumes = [{"name": "data", "source": "block", "size": svc["data_volume"]["size"]}]
    # Two doors: `api` is public (SPCS ingress; the API token is required there), `functions` is not, so only
    # Snowflake's service functions and services of the same owner reach it (the gateway answers /functions/*
    # there only, and believes the caller's role only there). The service role grants USAGE on both: analysts
    # use the web page and API through `api` and call the SQL functions bound to `functions`.
    # https://docs.snowflake.com/en/developer-guide/snowpark-container-services/specification-reference
    # https://docs.snowflake.com/en/developer-guide/snowpark-container-services/tutorials/advanced/tutorial-5-configure-test-service-role
    endpoints = [
        {"name": svc["endpoint"], "port": ports["gateway"], "public": True, "protocol": "HTTP"},
        {"name": svc["functions_endpoint"], "port": ports["functions"], "public": False, "protocol": "HTTP"},
    ]
    return {
        "spec": {
            "containers": [container],
            "endpoints": endpoints,
            "volumes": volumes + stage_volumes(stages),
        },
        "serviceRoles": [{"name": svc["service_role"], "endpoints": [e["name"] for e in endpoints]}],
    }


def head(config: dict[str, Any]) -> dict[str, Any]:
    svc, ports = config["services"]["head"], config["ports"]
    flags = [
        "--head",
        "--num-gpus=0",  # the Whisper replicas go to the GPU workers; the head runs Serve and the decoder
        "--dashboard-host=0.0.0.0",
        *port_flags(ports, HEAD_PORTS),
        *port_flags(ports, NODE_PORTS),
        *worker_range_flags(ports),
        f"--object-store-memory={object_store_bytes(svc)}",
        "--disable-usage-stats",
    ]
    # `ray start` returns once the head runs; the app then becomes the container's main process, so the
    # container (and SPCS's restart) follows the app, and the app dies with its Ray node.
    script = "\n".join(["set -e", "ray start " + " ".join(flags), "exec spcs-whisper ray-app", ""])
    env = {
        "SPCS_WHISPER_RAY_ADDRESS": "auto",  # the Ray node `ray start --head` just started in this container
        "SPCS_WHISPER_SERVE_HOST": "0.0.0.0",
        "SPCS_WHISPER_SERVE_PORT": str(ports["serve"]),
        "SPCS_WHISPER_ENGINE": config["engine"],
        "SPCS_WHISPER_MODEL": config["model"],
        "SPCS_WHISPER_WHISPER_NUM_GPUS": "1",  # per replica: one replica per worker GPU
        **scaling_env(config),
        **ray_env(config),
    }
    endpoints = [{"name": "serve", "port": ports["serve"], "protocol": "TCP"}]
    endpoints += endpoint_list(ports, HEAD_PORTS) + endpoint_list(ports, NODE_PORTS) + [worker_range_endpoint(ports)]
    # The head mounts no stage: audio reaches the Decoder as bytes from the gateway, and the model is loaded by
    # the Whisper replicas, which live on the GPU workers.
    return ray_spec(config, svc, script, env, endpoints, gpus=0, stages={})


def worker(config: dict[str, Any]) -> dict[str, Any]:
    svc, ports = config["services"]["worker"], config["ports"]
    address = f"{dns_name(config['services']['head']['name'])}:{ports['gcs']}"
    flags = [
        f"--address={address}",
        f"--num-gpus={svc['gpus_per_instance']}",
        *port_flags(ports, NODE_PORTS),
        *worker_range_flags(ports),
        f"--object-store-memory={object_store_bytes(svc)}",
        "--disable-usage-stats",
        "--block",
    ]
    # Join the head and stay joined: when the head is not up yet, or restarts (a new cluster), leave and join again.
    # SPCS stops an instance (scaling in, upgrade, DROP) with SIGTERM to the container's main process, this shell:
    # the node is then drained (Ray Serve starts its replicas elsewhere and lets the windows they hold finish)
    # before Ray stops; windows cut off anyway are sent again by the Decoder to another replica.
    drain = config["scaling"]["drain_s"]
    script = "\n".join(
        [
            "drain() {",
            f"  ray drain-node --reason=DRAIN_NODE_REASON_PREEMPTION --reason-message='SPCS stops this instance' "
            f"--deadline-remaining-seconds={drain} || true",
            f"  sleep {max(drain - 5, 0)}",
            "  ray stop --force",
            "  exit 0",
            "}",
            "trap drain TERM",
            "while true; do",
            "  ray start " + " ".join(flags) + " &",
            "  wait $!",
            "  ray stop --force",
            f'  echo "ray worker: not joined to {address}; joining again in 10 s" >&2',
            "  sleep 10",
            "done",
            "",
        ]
    )
    endpoints = endpoint_list(ports, NODE_PORTS) + [worker_range_endpoint(ports)]
    models = {"MODELS": config["stages"]["MODELS"]}  # the Whisper replicas load the checkpoint from it
    return ray_spec(config, svc, script, ray_env(config), endpoints, gpus=svc["gpus_per_instance"], stages=models)


def ray_spec(
    config: dict[str, Any],
    svc: dict[str, Any],
    script: str,
    env: dict[str, str],
    endpoints: list[dict[str, Any]],
    gpus: int,
    stages: dict[str, str],
) -> dict[str, Any]:
    """A Ray node: the ray image running `script`, /dev/shm in memory, the `stages` its processes read
    mounted, every Ray port an endpoint."""
    resources = {kind: dict(values) for kind, values in svc["resources"].items()}
    if gpus:
        for kind in ("requests", "limits"):  # SPCS requires the same GPU count in both
            resources[kind]["nvidia.com/gpu"] = gpus
    container = {
        "name": svc["container"],
        "image": image_path(config, svc["image"]),
        "command": ["/bin/sh", "-c", script],
        "env": dict(sorted(env.items())),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, *stage_mounts(stages)],
        "resources": resources,
        "secrets": [secret(config, config["secrets"]["ray_auth_token"], "RAY_AUTH_TOKEN")],
    }
    volumes = [{"name": "dshm", "source": "memory", "size": svc["shm_size"]}]
    return {
        "spec": {
            "containers": [container],
            "endpoints": endpoints,
            "volumes": volumes + stage_volumes(stages),
        }
    }


def scaling_env(config: dict[str, Any]) -> dict[str, str]:
    """The Ray Serve app's scaling (service/inference/scaling.py), from the worker service's instance counts and
    the `scaling` section: Whisper replicas between MIN_INSTANCES × GPUs and MAX_INSTANCES × GPUs."""
    floor, ceiling = whisper_replicas(config)
    scaling = config["scaling"]
    return {
        "SPCS_WHISPER_WHISPER_MIN_REPLICAS": str(floor),
        "SPCS_WHISPER_WHISPER_MAX_REPLICAS": str(ceiling),
        "SPCS_WHISPER_WHISPER_TARGET_WINDOWS": str(scaling["target_windows_per_replica"]),
        "SPCS_WHISPER_DECODER_MIN_REPLICAS": str(scaling["decoders"]["min"]),
        "SPCS_WHISPER_DECODER_MAX_REPLICAS": str(scaling["decoders"]["max"]),
        "SPCS_WHISPER_UPSCALE_DELAY_S": str(scaling["upscale_delay_s"]),
        "SPCS_WHISPER_DOWNSCALE_DELAY_S": str(scaling["downscale_delay_s"]),
    }


def ray_env(config: dict[str, Any]) -> dict[str, str]:
    env = {"RAY_AUTH_MODE": "token"}  # the token itself comes from a secret (RAY_AUTH_TOKEN)
    return env if config["external_access"]["enabled"] else {**env, **HF_OFFLINE}


def secret(config: dict[str, Any], name: str, env_var: str) -> dict[str, Any]:
    return {
        "snowflakeSecret": {"objectName": qualified(config, name)},
        "secretKeyRef": "secret_string",
        "envVarName": env_var,
    }


def volume_name(stage: str) -> str:
    return stage.lower().replace("_", "-")


def stage_mounts_json(stages: dict[str, str]) -> str:
    return json.dumps(dict(sorted(stages.items())), separators=(",", ":"))


def stage_mounts(stages: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": volume_name(stage), "mountPath": path} for stage, path in sorted(stages.items())]


def stage_volumes(stages: dict[str, str]) -> list[dict[str, Any]]:
    """Stage volumes in the generally available form: `source: stage` with the stage in `stageConfig`; the
    `source: "@STAGE"` form is the deprecated implementation.
    https://docs.snowflake.com/en/developer-guide/snowpark-container-services/snowflake-stage-volume"""
    return [
        {"name": volume_name(stage), "source": "stage", "stageConfig": {"name": f"@{stage}"}}
        for stage in sorted(stages)
    ]


def port_flags(ports: dict[str, int], table: dict[str, tuple[str, str]]) -> list[str]:
    return [f"{flag}={ports[key]}" for flag, (key, _) in table.items()]


def worker_range_flags(ports: dict[str, int]) -> list[str]:
    return [f"{WORKER_RANGE[0]}={ports['min_worker']}", f"{WORKER_RANGE[1]}={ports['max_worker']}"]


def endpoint_list(ports: dict[str, int], table: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"name": name, "port": ports[key], "protocol": "TCP"} for key, name in table.values()]


def worker_range_endpoint(ports: dict[str, int]) -> dict[str, Any]:
    return {"name": "workers", "portRange": f"{ports['min_worker']}-{ports['max_worker']}", "protocol": "TCP"}
