"""Where Snowflake sessions come from: connection parameters in their order of precedence, SPCS token rotation,
and the provider's cache. Temporary files only; nothing connects to Snowflake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.storage.snowflake_session import SessionProvider, connection_parameters

ENV = (
    "SNOWFLAKE_ACCOUNT",
    "SNOWFLAKE_HOST",
    "SNOWFLAKE_WAREHOUSE",
    "SNOWFLAKE_DATABASE",
    "SNOWFLAKE_SCHEMA",
    "SNOWFLAKE_USER",
    "SNOWFLAKE_PASSWORD",
    "SNOWFLAKE_PRIVATE_KEY_FILE",
    "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
    "SNOWFLAKE_ROLE",
    "SNOWFLAKE_CONNECTION_NAME",
    "SNOWFLAKE_TOKEN_PATH",
    "SNOWFLAKE_LOCAL_TESTING",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"SPCS_WHISPER_{name}", raising=False)


def _settings(tmp_path: Path, **values: Any) -> Settings:
    values.setdefault("snowflake_token_path", tmp_path / "no-token")
    return Settings(data_dir=tmp_path, **values)


EXPLICIT = {
    "snowflake_account": "myorg-acct",
    "snowflake_user": "WHISPER",
    "snowflake_password": "s3cret",
    "snowflake_database": "WHISPER_DB",
    "snowflake_schema": "PUBLIC",
    "snowflake_warehouse": "WH",
}


def test_spcs_token_beats_explicit_settings(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("oauth-token-1\n")
    settings = _settings(
        tmp_path,
        snowflake_token_path=token,
        snowflake_host="acct.snowflakecomputing.com",
        snowflake_connection_name="dev",
        **EXPLICIT,
    )
    assert connection_parameters(settings) == {
        "host": "acct.snowflakecomputing.com",
        "account": "myorg-acct",
        "authenticator": "oauth",
        "token": "oauth-token-1",
        "database": "WHISPER_DB",
        "schema": "PUBLIC",
        "warehouse": "WH",
    }
    token.write_text("oauth-token-2")  # SPCS rotates it: every new session reads it again
    assert connection_parameters(settings)["token"] == "oauth-token-2"


def test_token_file_without_host_is_not_spcs(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("oauth-token")
    params = connection_parameters(_settings(tmp_path, snowflake_token_path=token, **EXPLICIT))
    assert params["password"] == "s3cret" and "token" not in params


def test_explicit_settings_with_password(tmp_path: Path) -> None:
    settings = _settings(tmp_path, snowflake_role="WHISPER_ROLE", snowflake_connection_name="dev", **EXPLICIT)
    assert connection_parameters(settings) == {
        "account": "myorg-acct",
        "user": "WHISPER",
        "password": "s3cret",
        "database": "WHISPER_DB",
        "schema": "PUBLIC",
        "warehouse": "WH",
        "role": "WHISPER_ROLE",
    }


def test_explicit_settings_with_private_key(tmp_path: Path) -> None:
    key = tmp_path / "rsa_key.p8"
    key.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\n...\n-----END ENCRYPTED PRIVATE KEY-----\n")
    settings = _settings(
        tmp_path,
        snowflake_account="acct",
        snowflake_user="WHISPER",
        snowflake_private_key_file=key,
        snowflake_private_key_passphrase="pass",
    )
    assert connection_parameters(settings) == {
        "account": "acct",
        "user": "WHISPER",
        "private_key_file": str(key),  # read by the connector (4.x) itself, which switches to key-pair auth
        "private_key_file_pwd": "pass",
    }


def test_connection_name(tmp_path: Path) -> None:
    settings = _settings(tmp_path, snowflake_connection_name="dev", snowflake_database="WHISPER_DB")
    assert connection_parameters(settings) == {"connection_name": "dev", "database": "WHISPER_DB"}
    # Incomplete explicit settings (no secret) do not hide the connection name.
    settings = _settings(tmp_path, snowflake_connection_name="dev", snowflake_account="a", snowflake_user="u")
    assert connection_parameters(settings)["connection_name"] == "dev"


def test_nothing_configured_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as error:
        connection_parameters(_settings(tmp_path, snowflake_account="acct"))
    message = str(error.value)
    for name in ("SNOWFLAKE_HOST", "SPCS_WHISPER_SNOWFLAKE_ACCOUNT", "SPCS_WHISPER_SNOWFLAKE_CONNECTION_NAME"):
        assert name in message


class _FakeSession:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_provider_keeps_its_session_when_the_token_rotates(tmp_path: Path) -> None:
    """Issue 13, rule 5: a rotated token file does not replace the session (closing it would cancel its queries
    in flight, and a session opened with an older token stays valid); the file is read again only when a new
    session must be opened, after the session is gone."""
    token = tmp_path / "token"
    token.write_text("t1")
    settings = _settings(tmp_path, snowflake_token_path=token, snowflake_host="h.snowflakecomputing.com")
    made: list[_FakeSession] = []

    def factory() -> Any:
        made.append(_FakeSession(connection_parameters(settings)))
        return made[-1]

    provider = SessionProvider(settings, factory)
    first = provider.get()
    assert provider.get() is first and first.params["token"] == "t1"
    token.write_text("t2")  # SPCS refreshed the file
    for _ in range(3):
        assert provider.get() is first and not first.closed
    provider.invalidate()  # e.g. 390114: the session is gone; now the new token is read
    second = provider.get()
    assert second is not first and second.params["token"] == "t2" and len(made) == 2
    assert not first.closed  # queries of other threads may still run on it for a while
    provider.close()
    assert all(s.closed for s in made)


def test_provider_keeps_a_shared_session_open_on_invalidate(tmp_path: Path) -> None:
    shared = _FakeSession({})
    provider = SessionProvider(_settings(tmp_path), lambda: shared)  # type: ignore[arg-type, return-value]
    assert provider.get() is shared
    provider.invalidate()
    assert provider.get() is shared and not shared.closed


def test_local_testing_session_survives_invalidate(tmp_path: Path) -> None:
    provider = SessionProvider(_settings(tmp_path, snowflake_local_testing=True))
    session = provider.get()
    session.create_dataframe([[1]], schema=["X"]).write.save_as_table("T", mode="append")
    provider.invalidate()  # the emulator's tables live in its session: keep it
    assert provider.get() is session and session.table("T").count() == 1
    provider.close()
