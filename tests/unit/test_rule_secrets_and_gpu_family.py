"""Issue 13, rule 12: secrets never reach `snow sql` as `-D` arguments (visible in the process list and the shell
history) but through stdin; and GPU instance families differ by cloud (GPU_NV_S is AWS only), so deploy/config.yaml
names its cloud and `make deploy` refuses a family the account's cloud does not have.

Snowflake documentation followed:
  snow sql options: --stdin/-i ("Read the query from standard input. Use it when piping input to this command"),
  --variable/-D, --enable-templating (NONE), --format:
    https://docs.snowflake.com/en/developer-guide/snowflake-cli/command-reference/sql-commands/sql
  GPU instance families and the clouds that have them (INSTANCE_FAMILY table):
    https://docs.snowflake.com/en/sql-reference/sql/create-compute-pool
    https://docs.snowflake.com/en/developer-guide/snowpark-container-services/working-with-compute-pool
  CURRENT_REGION() (AWS_US_WEST_2, or PUBLIC.AWS_US_WEST_2 across region groups):
    https://docs.snowflake.com/en/sql-reference/functions/current_region

The Makefile is read through `make -n deploy`, its commands split into shell words with shlex, and `make deploy` is
run for real against a stand-in `snow` and `docker` that record their arguments, their stdin and every process's
command line on the machine while they run.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from snowflake.connector.util_text import split_statements
from sqlglot.dialects.snowflake import Snowflake
from sqlglot.tokens import TokenType

from deploy import cloud
from deploy.config import CLOUDS, CONFIG_PATH, GPU_FAMILIES, RUNTIME_SQL_VARS, ConfigError, check, load
from deploy.secrets_sql import API_TOKEN_ENV, secrets_sql

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TOKEN = "sentinel-api-token-4f1c"  # recognisable in any argv or command line
CONFIG = load()
REGION_ON = {"aws": "AWS_US_WEST_2", "azure": "AZURE_EASTUS2", "gcp": "GCP_US_CENTRAL1"}  # CURRENT_REGION() values
SHELL_WORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "(", "$("}


# --- `make -n deploy`, as shell commands ----------------------------------------------------------------------------


@dataclass
class Command:
    argv: list[str]
    redirects: dict[str, str] = field(default_factory=dict)  # operator -> target, e.g. {">": "/dev/null"}


def pipelines(script: str) -> list[list[Command]]:
    """Every pipeline of the commands `make -n` prints: lines joined at `\\`-newline, split into shell words by shlex,
    then at `&&`, `||`, `;` into pipelines and at `|` into commands, with their redirections apart."""
    found: list[list[Command]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        pipeline: list[Command] = [Command([])]
        words = list(lexer)
        i = 0
        while i < len(words):
            word = words[i]
            if word in {"&&", "||", ";", "&"}:
                found.append(pipeline)
                pipeline = [Command([])]
            elif word == "|":
                pipeline.append(Command([]))
            elif word in {">", ">>", "<", ">&"} and i + 1 < len(words):
                pipeline[-1].redirects[word] = words[i + 1]
                i += 1
            else:
                pipeline[-1].argv.append(word)
            i += 1
        found.append(pipeline)
    for pipeline in found:  # `then snow ...`, `do docker ...`, `repo=$(snow ...`: the command itself
        for command in pipeline:
            while command.argv and (command.argv[0] in SHELL_WORDS or re.fullmatch(r"\w+=\$?", command.argv[0])):
                command.argv.pop(0)
    return [[c for c in p if c.argv] for p in found if any(c.argv for c in p)]


def dry_run() -> tuple[str, list[list[Command]]]:
    env = {**os.environ, API_TOKEN_ENV: TOKEN}
    run = subprocess.run(["make", "-n", "deploy"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout, pipelines(run.stdout)


def is_snow(command: Command) -> bool:
    return Path(command.argv[0]).name == "snow"


def variables(argv: list[str]) -> dict[str, str]:
    """The `-D name=value` / `--variable name=value` options of a snow command."""
    values = {}
    for i, word in enumerate(argv):
        if word in {"-D", "--variable"} and i + 1 < len(argv):
            name, _, value = argv[i + 1].partition("=")
            values[name] = value
        elif word.startswith("--variable="):
            name, _, value = word.removeprefix("--variable=").partition("=")
            values[name] = value
    return values


def test_dry_run_passes_no_secret_on_a_command_line() -> None:
    out, found = dry_run()
    commands = [c for p in found for c in p]
    snow = [c for c in commands if is_snow(c)]
    assert len(snow) >= 10, out
    assert TOKEN not in out, "the token itself is never written into a command"
    for command in snow:
        assert not set(variables(command.argv)) & set(RUNTIME_SQL_VARS), f"secret as -D: {command.argv}"
        # No value computed into snow's arguments by the shell: $VAR or $(...) there would end up in argv.
        assert not [w for w in command.argv if "$(" in w or "`" in w or API_TOKEN_ENV in w], command.argv
    for command in commands:
        assert not [w for w in command.argv if API_TOKEN_ENV in w], f"{API_TOKEN_ENV} expanded into {command.argv}"


def test_dry_run_pipes_the_secrets_script_into_snow_stdin() -> None:
    _, found = dry_run()
    secrets = [p for p in found if any("--secrets-sql" in c.argv for c in p)]
    assert len(secrets) == 1
    ((render, snow),) = secrets
    assert Path(render.argv[0]).name.startswith("python") and render.argv[1:] == [
        "-m",
        "deploy.render",
        "--secrets-sql",
    ]
    assert is_snow(snow) and snow.argv[1] == "sql"
    assert {"--stdin", "-i"} & set(snow.argv), "snow reads the script from stdin"
    assert not {"-f", "--filename", "-q", "--query", "-D", "--variable"} & set(snow.argv)
    assert snow.argv[snow.argv.index("--enable-templating") + 1] == "NONE", "a value is never read as a template"
    assert snow.redirects == {">": "/dev/null"}, "snow prints each statement it runs: discarded"
    assert "<" not in render.redirects and ">" not in render.redirects
    flat = [" ".join(c.argv) for p in found for c in p]
    check_at = [i for i, c in enumerate(flat) if c.endswith("-m deploy.render --check-secrets")]
    setup_at = next(i for i, c in enumerate(flat) if "sql/00_setup.sql" in c)
    secrets_at = next(i for i, c in enumerate(flat) if "--secrets-sql" in c)
    assert check_at and check_at[0] < setup_at, "a missing token stops the deploy before anything is created"
    assert any(setup_at < i < secrets_at for i in check_at), "and is checked again before the secrets are written"


def secret_strings(sql: str) -> dict[str, str]:
    """secret name -> SECRET_STRING value of each statement, as the Snowflake connector splits the script (what
    `snow sql` runs) and sqlglot's Snowflake tokenizer reads the string literal."""
    values = {}
    for statement, _ in split_statements(StringIO(sql), remove_comments=True):
        tokens = Snowflake().tokenize(statement)
        texts = [t.text.upper() for t in tokens]
        assert texts[:5] == ["CREATE", "SECRET", "IF", "NOT", "EXISTS"], statement
        at = texts.index("SECRET_STRING")
        assert texts[at + 1] == "=" and tokens[at + 2].token_type == TokenType.STRING, statement
        values[tokens[5].text] = tokens[at + 2].text
    return values


def render_secrets(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "deploy.render", "--secrets-sql"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_secrets_script_reads_the_token_from_the_environment_and_makes_the_ray_token() -> None:
    first, second = render_secrets({API_TOKEN_ENV: TOKEN}), render_secrets({API_TOKEN_ENV: TOKEN})
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    names = CONFIG["secrets"]
    values, again = secret_strings(first.stdout), secret_strings(second.stdout)
    assert list(values) == [names["api_token"], names["ray_auth_token"]]
    assert values[names["api_token"]] == TOKEN
    ray = values[names["ray_auth_token"]]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", ray), "32 random bytes, URL-safe"
    assert again[names["ray_auth_token"]] != ray, "a fresh Ray token each time"


@pytest.mark.parametrize(
    "token",
    ["it's", "back\\slash\\'", "<% api_token %>", "&{ api_token }", "a;b -- c /* d", "$$x$$", "'; DROP SECRET X; --"],
)
def test_secret_values_are_escaped_as_string_literals(token: str) -> None:
    sql = secrets_sql(CONFIG, {API_TOKEN_ENV: token})
    values = secret_strings(sql)
    assert len(values) == 2 and values[CONFIG["secrets"]["api_token"]] == token


def test_secrets_script_refuses_a_missing_token_a_control_character_and_a_terminal() -> None:
    missing = render_secrets({})
    assert missing.returncode == 2 and missing.stdout == "" and API_TOKEN_ENV in missing.stderr
    check = subprocess.run(
        [PY, "-m", "deploy.render", "--check-secrets"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 2 and API_TOKEN_ENV in check.stderr
    with pytest.raises(ConfigError, match="control character"):
        secrets_sql(CONFIG, {API_TOKEN_ENV: "two\nlines"})
    leader, follower = pty.openpty()
    try:
        tty = subprocess.run(
            [PY, "-m", "deploy.render", "--secrets-sql"],
            cwd=ROOT,
            env={"PATH": os.environ.get("PATH", ""), API_TOKEN_ENV: TOKEN},
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert tty.returncode == 2 and "snow sql --stdin" in tty.stderr, "secrets are never printed on a terminal"


# --- `make deploy` against a recording snow and docker --------------------------------------------------------------

RECORDER = """#!{python}
import json, os, sys
from pathlib import Path

argv = sys.argv[1:]
stdin = sys.stdin.read() if ("--stdin" in argv or "-i" in argv) else None
secrets = [os.environ["{token_env}"]] + [w for w in (stdin or "").split("'") if len(w) == 43]
seen = []
for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
    try:
        text = cmdline.read_bytes().replace(b"\\0", b" ").decode(errors="replace")
    except OSError:
        continue
    seen += [s for s in secrets if s in text]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"tool": Path(sys.argv[0]).name, "argv": argv, "stdin": stdin, "seen": seen}}) + "\\n")
if argv[:2] == ["sql", "-q"] and "CURRENT_REGION()" in argv[2]:
    print(json.dumps([{{"REGION": os.environ["FAKE_REGION"]}}]))
elif argv[:3] == ["spcs", "image-repository", "url"]:
    print("org-acct.registry.snowflakecomputing.com/whisper_db/public/whisper_images")
"""


def make_deploy(tmp_path: Path, region: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    for tool in ("snow", "docker"):
        (tmp_path / tool).write_text(RECORDER.format(python=PY, token_env=API_TOKEN_ENV))
        (tmp_path / tool).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, API_TOKEN_ENV: TOKEN, "FAKE_LOG": str(log), "FAKE_REGION": region}
    result = subprocess.run(
        ["make", "deploy", f"SNOW={tmp_path / 'snow'}", f"DOCKER={tmp_path / 'docker'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_make_deploy_sends_the_secrets_through_stdin_only(tmp_path: Path) -> None:
    result, calls = make_deploy(tmp_path, REGION_ON[CONFIG["snowflake"]["cloud"]])
    assert result.returncode == 0, result.stdout + result.stderr
    snow = [c for c in calls if c["tool"] == "snow"]
    assert snow[0]["argv"][:2] == ["sql", "-q"] and "CURRENT_REGION()" in snow[0]["argv"][2], "the cloud first"
    (piped,) = [c for c in snow if c["stdin"] is not None]
    values = secret_strings(piped["stdin"])
    assert values[CONFIG["secrets"]["api_token"]] == TOKEN
    ray = values[CONFIG["secrets"]["ray_auth_token"]]
    for call in calls:
        assert not [w for w in call["argv"] if TOKEN in w or ray in w], call["argv"]
        assert call["seen"] == [], f"a secret was on a command line while {call['tool']} {call['argv'][:3]} ran"
    files = [c["argv"][c["argv"].index("-f") + 1] for c in snow if "-f" in c["argv"]]
    assert "sql/07_secrets.sql" not in files and files.index("sql/00_setup.sql") < files.index("sql/07_services.sql")
    assert TOKEN not in result.stdout + result.stderr, "snow's echo of the statements is discarded"


@pytest.mark.parametrize("other", [c for c in CLOUDS if c != load()["snowflake"]["cloud"]])
def test_make_deploy_refuses_an_account_on_another_cloud(tmp_path: Path, other: str) -> None:
    result, calls = make_deploy(tmp_path, f"PUBLIC.{REGION_ON[other]}")
    assert result.returncode != 0
    assert [c["argv"][:2] for c in calls] == [["sql", "-q"]], "nothing is created after the region query"
    assert f"on {other}" in result.stderr and ", ".join(GPU_FAMILIES[other]) in result.stderr


# --- GPU families per cloud in deploy/config.yaml and deploy/config.py ---------------------------------------------


def test_config_names_its_cloud_and_a_gpu_family_of_that_cloud() -> None:
    config = yaml.safe_load(CONFIG_PATH.read_text())
    assert config["snowflake"]["cloud"] in CLOUDS
    worker_pool = config["compute_pools"][config["services"]["worker"]["pool"]]
    assert worker_pool["instance_family"] in GPU_FAMILIES[config["snowflake"]["cloud"]]
    # The comment above `cloud:` lists the families per cloud as YAML: it says what deploy/config.py checks.
    lines = CONFIG_PATH.read_text().split("\nsnowflake:\n", 1)[1].split("\n  cloud:", 1)[0].splitlines()
    listed = {}
    for line in lines:
        try:
            entry = yaml.safe_load(line.strip().removeprefix("#"))
        except yaml.YAMLError:
            continue
        if isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in CLOUDS:
            listed |= entry
    assert listed == GPU_FAMILIES
    assert set(GPU_FAMILIES) == {"aws", "azure", "gcp"} and "GPU_NV_S" in GPU_FAMILIES["aws"]
    assert all("GPU_NV_S" not in GPU_FAMILIES[c] for c in ("azure", "gcp")), "GPU_NV_S is AWS only"


def configured(cloud_name: str, family: str) -> dict[str, Any]:
    config = load()
    config["snowflake"]["cloud"] = cloud_name
    config["compute_pools"]["gpu"]["instance_family"] = family
    return config


@pytest.mark.parametrize("cloud_name", CLOUDS)
def test_check_takes_only_the_gpu_families_of_the_configured_cloud(cloud_name: str) -> None:
    for family in GPU_FAMILIES[cloud_name]:
        check(configured(cloud_name, family))
    others = [f for c, families in GPU_FAMILIES.items() if c != cloud_name for f in families] + ["GPU_NV_XXL"]
    for family in others:
        with pytest.raises(ConfigError) as refused:
            check(configured(cloud_name, family))
        assert family in str(refused.value) and ", ".join(GPU_FAMILIES[cloud_name]) in str(refused.value)
    with pytest.raises(ConfigError, match="snowflake.cloud"):
        check(configured("oracle", "GPU_NV_S"))


def test_region_names_give_the_cloud() -> None:
    cases = {
        "AWS_US_WEST_2": "aws",
        "aws_us_east_1": "aws",
        "PUBLIC.AWS_US_WEST_2": "aws",
        "AZURE_EASTUS2": "azure",
        "GCP_US_CENTRAL1": "gcp",
    }
    assert {r: cloud.cloud_of_region(r) for r in cases} == cases
    assert cloud.region_in_output('[{"REGION": "GCP_EUROPE_WEST4"}]') == "GCP_EUROPE_WEST4"
    table = "+-----------------+\n| REGION          |\n|-----------------|\n| AZURE_WESTEUROPE |\n+-----------------+\n"
    assert cloud.region_in_output(table) == "AZURE_WESTEUROPE"
    for bad in ("", "[]", "error: connection refused", '[{"REGION": "ORACLE_PHX"}]'):
        with pytest.raises(ConfigError):
            cloud.region_in_output(bad)
    assert cloud.mismatch(CONFIG, REGION_ON[CONFIG["snowflake"]["cloud"]]) is None
