"""sql/07_secrets.sql with its secret values filled in, for `snow sql --stdin` (python -m deploy.render --secrets-sql).

A value passed as `snow sql -D name=value` is a command-line argument: every user of the machine sees it in the
process list (ps, /proc/<pid>/cmdline) and the shell keeps it in its history. So the values never reach a command
line: the API token is read from the environment ($SPCS_WHISPER_API_TOKEN), the Ray token is generated here, both
are written into the script as Snowflake string literals, and `make deploy` pipes the script into `snow sql --stdin`
("Read the query from standard input", https://docs.snowflake.com/en/developer-guide/snowflake-cli/command-reference/sql-commands/sql)
with `--enable-templating NONE`, so the CLI does not treat a `<% %>` or `&{ }` inside a value as a template.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Mapping
from typing import Any

from deploy.config import SQL_DIR, ConfigError, fill_sql, sql_vars

API_TOKEN_ENV = "SPCS_WHISPER_API_TOKEN"
SECRETS_SQL = SQL_DIR / "07_secrets.sql"


def string_literal_body(value: str, name: str) -> str:
    """`value` as the inside of a single-quoted Snowflake string literal: `\\` doubled (Snowflake reads backslash
    escape sequences in single-quoted strings) and `'` doubled. Control characters (newlines included) are refused:
    they are never part of a token and would change how the script is split into statements."""
    if not value:
        raise ConfigError(f"{name} is empty")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ConfigError(f"{name} contains a control character (newline, tab, ...)")
    return value.replace("\\", "\\\\").replace("'", "''")


def api_token(environ: Mapping[str, str]) -> str:
    """The gateway's bearer token from the environment, checked."""
    value = environ.get(API_TOKEN_ENV, "")
    if not value:
        raise ConfigError(f"set {API_TOKEN_ENV}: the gateway's bearer token, stored in the secret when it is created")
    string_literal_body(value, API_TOKEN_ENV)
    return value


def ray_auth_token() -> str:
    """A fresh Ray cluster token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def secrets_sql(config: dict[str, Any], environ: Mapping[str, str]) -> str:
    """sql/07_secrets.sql with every template variable filled: names from deploy/config.yaml, values as literals."""
    values = {
        "api_token": string_literal_body(api_token(environ), API_TOKEN_ENV),
        "ray_auth_token": string_literal_body(ray_auth_token(), "the Ray token"),
    }
    return fill_sql(SECRETS_SQL.read_text(), {**sql_vars(config), **values})
