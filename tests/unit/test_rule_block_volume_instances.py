"""Issue 13, rule 2: Snowflake refuses `ALTER SERVICE ... SET MIN_INSTANCES / MAX_INSTANCES` for a service with
a block volume, so such a service gets its instance counts in CREATE SERVICE only; otherwise `make deploy`
stops there, before the functions and grants exist.
https://docs.snowflake.com/en/developer-guide/snowpark-container-services/block-storage-volume
The services' SQL is parsed as it will run (template variables filled as `make deploy` fills them) and
each ALTER SERVICE is tokenized; the specs say which services have block volumes."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from tests.unit.test_deploy import CONFIG, SPEC_NAMES, spec
from tests.unit.test_sql import SQL_DIR, command_text, parse

INSTANCE_PROPERTIES = {"MIN_INSTANCES", "MAX_INSTANCES"}


def _alter_service_settings() -> dict[str, set[str]]:
    """Service name -> the properties its ALTER SERVICE ... SET statements set (07_services.sql)."""
    settings: dict[str, set[str]] = {}
    for statement in parse(SQL_DIR / "07_services.sql"):
        if not isinstance(statement, exp.Command):
            continue
        tokens = [t.text.upper() for t in sqlglot.tokenize(command_text(statement), read="snowflake")]
        if tokens[:2] != ["ALTER", "SERVICE"] or "SET" not in tokens:
            continue
        after_set = tokens[tokens.index("SET") + 1 :]
        names = {after_set[i - 1] for i, token in enumerate(after_set) if token == "=" and i > 0}
        settings.setdefault(tokens[2], set()).update(names)
    return settings


def test_services_with_block_volumes_are_never_resized_by_alter() -> None:
    altered = _alter_service_settings()
    assert altered, "07_services.sql alters no service: the parse found nothing"
    with_blocks = {
        CONFIG["services"][key]["name"].upper()
        for key in SPEC_NAMES
        if any(v["source"] == "block" for v in spec(key)["spec"].get("volumes", []))
    }
    assert with_blocks == {CONFIG["services"]["gateway"]["name"].upper()}
    for service in with_blocks:
        assert not altered.get(service, set()) & INSTANCE_PROPERTIES, f"{service}: {altered[service]}"
    # the services without block volumes still follow deploy/config.yaml's instance counts
    assert all(props >= INSTANCE_PROPERTIES for name, props in altered.items() if name not in with_blocks)


def test_the_gateway_gets_its_single_instance_in_create() -> None:
    gateway = CONFIG["services"]["gateway"]["name"].upper()
    creates = [
        command_text(s)
        for s in parse(SQL_DIR / "07_services.sql")
        if isinstance(s, exp.Command) and command_text(s).upper().startswith(f"CREATE SERVICE IF NOT EXISTS {gateway}")
    ]
    assert len(creates) == 1
    tokens = [t.text.upper() for t in sqlglot.tokenize(creates[0], read="snowflake")]
    values = {tokens[i - 1]: tokens[i + 1] for i, token in enumerate(tokens) if token == "="}
    assert values["MIN_INSTANCES"] == values["MAX_INSTANCES"] == "1"
