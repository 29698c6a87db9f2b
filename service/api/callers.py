"""Who is calling: in SPCS the ingress and service functions name the Snowflake user in
`Sf-Context-Current-User` (and service functions the role, with CONTEXT_HEADERS). Jobs record that user;
a user sees only their own jobs, a configured admin user or role sees all. Requests that carry no user
(local use, service-to-service calls inside SPCS) are not scoped."""

from __future__ import annotations

from fastapi import Request

from service.jobs.model import Job

USER_HEADER = "sf-context-current-user"
ROLE_HEADER = "sf-context-current-role"


def caller(request: Request) -> str | None:
    value = request.headers.get(USER_HEADER, "").strip()
    return value[:256] or None


def is_admin(request: Request) -> bool:
    settings = request.app.state.settings
    user, role = caller(request), request.headers.get(ROLE_HEADER, "").strip()
    admins = {name.upper() for name in settings.admin_users}
    return bool(user and user.upper() in admins) or bool(
        settings.admin_role and role and role.upper() == settings.admin_role.upper()
    )


def owner_filter(request: Request) -> str | None:
    """The owner a listing is limited to; None: everything (no user named, or an admin)."""
    user = caller(request)
    return None if user is None or is_admin(request) else user


def visible(request: Request, job: Job) -> bool:
    user = owner_filter(request)
    return user is None or job.owner == user
