"""Issue 13, rule 1: `make teardown` stops every credit without losing work. Snowflake refuses to drop a service
with a block volume unless FORCE is given (https://docs.snowflake.com/en/sql-reference/sql/drop-service), so
the gateway is first drained (WHISPER_DRAIN: running jobs finish, everything is exported to the tables) and
then dropped with FORCE; and the pools are dropped even when a step before them fails.

The Makefile is data here: `make -n teardown` is parsed (shlex, then sqlglot for each statement), and the
target is run for real against a STAND-IN `snow` executable that records each statement and fails the ones
a test names, as an account would."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import sqlglot
from sqlglot import exp

from tests.unit.test_deploy import CONFIG

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = CONFIG["services"]["gateway"]["name"]
POOLS = {key: pool["name"] for key, pool in CONFIG["compute_pools"].items()}
SERVICES = {key: svc["name"] for key, svc in CONFIG["services"].items()}

FAKE_SNOW = """#!{python}
import json, os, sys
args = sys.argv[1:]
statement = args[args.index("-q") + 1] if "-q" in args else "FILE " + args[args.index("-f") + 1]
with open(os.environ["SNOW_LOG"], "a") as log:
    log.write(statement + "\\n")
if any(part and part in statement for part in os.environ.get("SNOW_FAIL", "").split("|")):
    print("002003 (02000): SQL compilation error (stand-in failure)", file=sys.stderr)
    sys.exit(1)
if "WHISPER_DRAIN" in statement and statement.startswith("SELECT"):
    print(json.dumps([{{"DRAIN": os.environ.get("SNOW_DRAIN", '{{"drained": true, "running": 0}}')}}]))
"""


def statements(lines: str) -> list[str]:
    """The SQL each `snow sql -q` line of a dry run would send, in order."""
    found = []
    for line in lines.splitlines():
        words = shlex.split(line.strip().rstrip("\\").strip(), posix=True) if "-q" in line else []
        found += [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-q"]
    return found


def dry_run() -> list[str]:
    out = subprocess.run(
        ["make", "-n", "teardown", f"DEPLOY_PY={sys.executable}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return statements(out)


def tokens(statement: str) -> list[str]:
    return [t.text.upper() for t in sqlglot.tokenize(statement, read="snowflake")]


def test_the_order_drains_first_and_drops_the_gateway_with_force() -> None:
    order = dry_run()
    parsed = [sqlglot.parse_one(s, read="snowflake") for s in order]
    assert isinstance(parsed[0], exp.Select) and "WHISPER_DRAIN" in tokens(order[0])
    drops = {t[4]: i for i, t in enumerate(map(tokens, order)) if t[:4] == ["DROP", "SERVICE", "IF", "EXISTS"]}
    assert set(drops) == {name.upper() for name in SERVICES.values()}
    gateway_drop = tokens(order[drops[GATEWAY.upper()]])
    assert gateway_drop[-1] == "FORCE", order[drops[GATEWAY.upper()]]
    for key, pool in POOLS.items():
        pool_drop = next(
            i for i, t in enumerate(map(tokens, order)) if t[:3] == ["DROP", "COMPUTE", "POOL"] and pool in t
        )
        on_pool = [drops[svc["name"].upper()] for svc in CONFIG["services"].values() if svc["pool"] == key]
        assert all(i < pool_drop for i in on_pool), f"{pool} dropped before its services"
    functions = [i for i, s in enumerate(parsed) if isinstance(s, exp.Drop) and s.kind == "FUNCTION"]
    assert functions and min(functions) > 0  # WHISPER_DRAIN itself is a function: dropped after it ran


def run_teardown(tmp_path: Path, fail: str = "", drain: str | None = None, force: bool = False) -> tuple:
    """(exit status, the statements the stand-in snow got, stderr)."""
    tmp_path.mkdir(exist_ok=True)
    snow = tmp_path / "snow"
    snow.write_text(FAKE_SNOW.format(python=sys.executable))
    snow.chmod(0o755)
    log = tmp_path / "snow.log"
    env = {**os.environ, "SNOW_LOG": str(log), "SNOW_FAIL": fail}
    if drain is not None:
        env["SNOW_DRAIN"] = drain
    args = ["make", "-s", "teardown", f"SNOW={snow}", f"DEPLOY_PY={sys.executable}", f"TEARDOWN_DIR={tmp_path / 'td'}"]
    done = subprocess.run(args + (["FORCE=1"] if force else []), cwd=ROOT, env=env, capture_output=True, text=True)
    return done.returncode, log.read_text().splitlines(), done.stderr


def test_a_failed_service_drop_does_not_keep_the_pools(tmp_path: Path) -> None:
    worker = SERVICES["worker"]
    code, ran, stderr = run_teardown(tmp_path, fail=f"DROP SERVICE IF EXISTS {worker}")
    assert code != 0 and f"drop {worker}" in stderr  # the failure is reported...
    for pool in POOLS.values():  # ...and every credit still stops
        assert f"DROP COMPUTE POOL IF EXISTS {pool}" in ran, ran
    assert f"DROP SERVICE IF EXISTS {GATEWAY} FORCE" in ran


def test_a_gateway_that_did_not_drain_keeps_its_volume_unless_forced(tmp_path: Path) -> None:
    undrained = json.dumps({"drained": False, "running": 0, "queued": 3, "pending_exports": 12})
    code, ran, stderr = run_teardown(tmp_path / "a", drain=undrained)
    assert code != 0 and "did not drain" in stderr
    assert f"DROP COMPUTE POOL IF EXISTS {POOLS['gpu']}" in ran  # the GPU nodes stop in any case
    assert not any(GATEWAY in s and s.startswith("DROP SERVICE") for s in ran)
    assert f"DROP COMPUTE POOL IF EXISTS {POOLS['cpu']}" not in ran
    code, ran, _ = run_teardown(tmp_path / "b", drain=undrained, force=True)
    assert f"DROP SERVICE IF EXISTS {GATEWAY} FORCE" in ran and f"DROP COMPUTE POOL IF EXISTS {POOLS['cpu']}" in ran


def test_a_clean_teardown_succeeds(tmp_path: Path) -> None:
    code, ran, stderr = run_teardown(tmp_path)
    assert code == 0, stderr
    assert ran[0].startswith("SELECT WHISPER_DRAIN(")
    assert ran[-1] == f"DROP COMPUTE POOL IF EXISTS {POOLS['cpu']}"
