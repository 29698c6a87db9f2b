"""Where Snowpark sessions come from: the SPCS OAuth token, explicit settings, or a connections.toml name.

`SessionProvider` hands out one cached session (thread-safe) to the store, the stage reader and the Cortex
translator, and keeps it. Inside SPCS the token file is refreshed every few minutes, but a session opened with
an older token stays valid, and closing a session cancels its queries in flight; so the token file is read
again only when a new session must be opened: at the first use, and after an error that says the session is
gone (`invalidate()`, e.g. 390112/390114). A replaced session is closed a minute later, so a query running on
it in another thread can finish.
https://docs.snowflake.com/en/developer-guide/snowpark-container-services/additional-considerations-services#connecting-to-snowflake-from-inside-a-container
Snowpark is imported lazily: the gateway stays light when nothing uses Snowflake.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from snowflake.snowpark import Session

    from service.config import Settings

log = logging.getLogger(__name__)
RETIRE_AFTER_S = 60.0  # a replaced session is closed this long after its replacement opened
SECRET_KEYS = frozenset({"token", "password", "private_key_file_pwd"})  # never logged

MISSING = (
    "no Snowflake connection configured: inside SPCS set SNOWFLAKE_HOST (the token file "
    "{token} must exist); outside, set SPCS_WHISPER_SNOWFLAKE_ACCOUNT, SPCS_WHISPER_SNOWFLAKE_USER and "
    "SPCS_WHISPER_SNOWFLAKE_PASSWORD or SPCS_WHISPER_SNOWFLAKE_PRIVATE_KEY_FILE, or name a connections.toml "
    "entry in SPCS_WHISPER_SNOWFLAKE_CONNECTION_NAME (or set SPCS_WHISPER_SNOWFLAKE_LOCAL_TESTING=true for "
    "Snowpark's local emulator)"
)


def _token(settings: Settings) -> str | None:
    """The SPCS OAuth token, when running in SPCS (host set, token file present and not empty)."""
    path = settings.snowflake.snowflake_token_path
    if not settings.snowflake.snowflake_host or not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def connection_parameters(settings: Settings) -> dict[str, Any]:
    """Snowpark connection parameters, first match wins: (1) SPCS: the OAuth token file and SNOWFLAKE_HOST;
    (2) explicit settings: account, user and a password or a private key file (PKCS#8 PEM, optionally with a
    passphrase; the connector reads it: `private_key_file` / `private_key_file_pwd`); (3) a connections.toml
    name. Database, schema, warehouse and role apply to all three when set. Raises ValueError otherwise."""
    common = {
        "database": settings.snowflake.snowflake_database,
        "schema": settings.snowflake.snowflake_schema,
        "warehouse": settings.snowflake.snowflake_warehouse,
        "role": settings.snowflake.snowflake_role,
    }
    common = {key: value for key, value in common.items() if value}
    token = _token(settings)
    if token is not None:
        params: dict[str, Any] = {"host": settings.snowflake.snowflake_host, "authenticator": "oauth", "token": token}
        if settings.snowflake.snowflake_account:
            params["account"] = settings.snowflake.snowflake_account
        return {**params, **common}
    secret = settings.snowflake.snowflake_password or settings.snowflake.snowflake_private_key_file
    if settings.snowflake.snowflake_account and settings.snowflake.snowflake_user and secret:
        params = {"account": settings.snowflake.snowflake_account, "user": settings.snowflake.snowflake_user}
        if settings.snowflake.snowflake_host:
            params["host"] = settings.snowflake.snowflake_host
        if settings.snowflake.snowflake_private_key_file is not None:
            params["private_key_file"] = str(settings.snowflake.snowflake_private_key_file)
            if settings.snowflake.snowflake_private_key_passphrase is not None:
                params["private_key_file_pwd"] = settings.snowflake.snowflake_private_key_passphrase.get_secret_value()
        else:
            assert settings.snowflake.snowflake_password is not None
            params["password"] = settings.snowflake.snowflake_password.get_secret_value()
        return {**params, **common}
    if settings.snowflake.snowflake_connection_name:
        return {"connection_name": settings.snowflake.snowflake_connection_name, **common}
    raise ValueError(MISSING.format(token=settings.snowflake.snowflake_token_path))


_SESSION_GONE = {390111, 390112, 390114}  # session no longer exists / expired / token expired


def is_session_gone(exc: BaseException) -> bool:
    """The session itself is unusable: open a new one."""
    from snowflake.snowpark.exceptions import SnowparkSessionException

    code = getattr(exc, "sql_error_code", None) or getattr(exc, "errno", None)
    return isinstance(exc, SnowparkSessionException) or code in _SESSION_GONE


def is_local(session: Session) -> bool:
    """A session of Snowpark's local-testing emulator (no SQL text; its tables live in the session)."""
    return type(getattr(session, "_conn", None)).__name__ == "MockServerConnection"


def _builder() -> Any:
    """A fresh builder: `Session.builder` is shared and keeps options between uses."""
    from snowflake.snowpark import Session

    return Session.SessionBuilder()


class SessionSource(Protocol):
    """Hands out a Snowpark session; `invalidate` drops it so the next `get` opens a fresh one."""

    def get(self) -> Session: ...

    def invalidate(self) -> None: ...


class SessionProvider:
    """One cached Snowpark session; `invalidate()` makes the next `get()` open a new one. A replaced session
    is closed RETIRE_AFTER_S later (queries of other threads may still run on it), all of them on `close()`."""

    def __init__(self, settings: Settings, factory: Callable[[], Session] | None = None) -> None:
        self.settings = settings
        self._factory = factory
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._retired: list[tuple[float, Session]] = []

    def _create(self) -> Session:
        if self._factory is not None:
            return self._factory()
        if self.settings.snowflake.snowflake_local_testing:
            return _builder().config("local_testing", True).create()
        params = connection_parameters(self.settings)
        log.info("opening a Snowflake session (%s)", ", ".join(sorted(k for k in params if k not in SECRET_KEYS)))
        session = _builder().configs(params).create()
        # Fewer DESCRIBE round trips for frames whose schema Snowpark can infer locally.
        # https://docs.snowflake.com/en/developer-guide/snowpark/reference/python/latest/snowpark/api/snowflake.snowpark.Session.reduce_describe_query_enabled
        session.reduce_describe_query_enabled = True
        return session

    def get(self) -> Session:
        with self._lock:
            if self._session is None:  # the token file is read here only, when a session is opened
                self._session = self._create()
            self._close_retired(RETIRE_AFTER_S)
            return self._session

    def invalidate(self) -> None:
        """Drop the session (e.g. it expired); the next `get()` opens a new one. A no-op for the local
        emulator, whose tables live in its one session."""
        with self._lock:
            if self._session is None or is_local(self._session):
                return
            self._retired.append((time.monotonic(), self._session))
            self._session = None

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._retired.append((time.monotonic(), self._session))
                self._session = None
            self._close_retired(0.0)

    def _close_retired(self, after_s: float) -> None:
        deadline = time.monotonic() - after_s
        keep = []
        for retired_at, session in self._retired:
            if session is self._session:
                continue  # a factory handed the same session out again: it is in use
            if retired_at > deadline:
                keep.append((retired_at, session))
                continue
            try:
                session.close()
            except Exception as exc:  # closing is best effort: the server drops idle sessions anyway
                log.debug("closing a Snowflake session failed: %s", exc)
        self._retired = keep
