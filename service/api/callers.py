"""Who is calling: in SPCS the ingress and service functions name the Snowflake user in
`Sf-Context-Current-User` (and service functions the role, with CONTEXT_HEADERS). Jobs record that user;
a user sees only their own jobs, a configured admin user or role sees all.

The gateway has two doors (service/api/errors.py, `RequestContext`): the public port (SPCS's public endpoint,
the API token required) and the functions port (a non-public endpoint that only Snowflake's service functions
and services of the same owner reach). The role header is believed only on the functions port: through the
public ingress a client could send `Sf-Context-Current-Role: <admin role>` itself, since SPCS ingress passes the
user only (https://docs.snowflake.com/en/developer-guide/snowpark-container-services/service-network-communications).
On the functions port every request names its user (a request without one is refused before it gets here).
On the public port a request without a user is a holder of the API token (local use, service-to-service calls
inside SPCS) and is not scoped."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from service.config import Settings
from service.jobs.model import Job

USER_HEADER = "sf-context-current-user"
ROLE_HEADER = "sf-context-current-role"
DOOR = "spcs_whisper.door"  # set in the ASGI scope by RequestContext from the local port
FUNCTIONS_DOOR, PUBLIC_DOOR = "functions", "public"


def on_functions_door(request: Request) -> bool:
    return request.scope.get(DOOR) == FUNCTIONS_DOOR


def caller(request: Request) -> str | None:
    value = request.headers.get(USER_HEADER, "").strip()
    return value[:256] or None


def role(request: Request) -> str | None:
    """The caller's Snowflake role: only what a service function sent (never a public-port header)."""
    if not on_functions_door(request):
        return None
    return request.headers.get(ROLE_HEADER, "").strip() or None


@dataclass(frozen=True)
class Caller:
    """Who is calling (`user`, and `role` on the functions door only) and what they may see."""

    user: str | None
    role: str | None
    functions_door: bool
    admin: bool

    @classmethod
    def of(cls, request: Request, settings: Settings) -> Caller:
        user, current_role = caller(request), role(request)
        admins = {name.upper() for name in settings.gateway.admin_users}
        admin = bool(user and user.upper() in admins) or bool(
            settings.gateway.admin_role and current_role and current_role.upper() == settings.gateway.admin_role.upper()
        )
        return cls(user, current_role, on_functions_door(request), admin)

    @property
    def owner_filter(self) -> str | None:
        """The owner a listing is limited to; None: everything (an admin, or a token holder on the public port
        naming no user). On the functions port a request without a user never gets here (RequestContext: 400);
        were it to, it would see nothing (an owner no job has)."""
        if self.user is None:
            return "\x00no-user" if self.functions_door else None
        return None if self.admin else self.user

    def sees(self, job: Job) -> bool:
        owner = self.owner_filter
        return owner is None or job.owner == owner
