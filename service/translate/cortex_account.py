"""What the Snowflake account must allow for Cortex translation, checked once at the gateway's start.

`check_cortex()` decides which translate function the account has (AI_TRANSLATE, else the legacy
SNOWFLAKE.CORTEX.TRANSLATE) and, for `cortex-complete`, reads CORTEX_ENABLED_CROSS_REGION: a model the
account's region does not serve (the `openai-*` models, outside the few regions that host them) answers
"The model you requested is unavailable in your region" until an ACCOUNTADMIN allows cross-region inference.
Each problem is logged as a warning naming what to do, and returned; none stops the gateway.

Cross-region inference: https://docs.snowflake.com/en/user-guide/snowflake-cortex/cross-region-inference
- the parameter is set at the account level only, by ACCOUNTADMIN, with ALTER ACCOUNT; DISABLED (the
  default) keeps inference in the account's region; 'ANY_REGION' allows any region; region groups
  ('AWS_US', 'AWS_EU', 'AZURE_US', ...) or cloud-wide values ('AWS_GLOBAL', 'AZURE_GLOBAL', 'GCP_GLOBAL'),
  comma-separated, allow those only.
- COMPLETE with an OpenAI model from another region names the values that reach it: "enable cross region
  inference with AZURE_US, ANY_REGION" (the OpenAI models run in Azure US regions).
- the 2026_06 behaviour change bundle sets a geography-scoped default for accounts that never set it
  (https://docs.snowflake.com/release-notes/bcr-bundles/2026_06/bcr-2376): read the value, do not assume it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from service.translate.cortex import (
    CROSS_REGION_STATEMENT,
    LANGUAGES,
    TRANSLATE_FUNCTION,
    CortexTranslate,
    _describe,
)

if TYPE_CHECKING:
    from snowflake.snowpark import Session

    from service.config import Settings
    from service.storage.snowflake_session import SessionSource
    from service.translate.base import Translator

log = logging.getLogger(__name__)

CROSS_REGION_PARAMETER = "CORTEX_ENABLED_CROSS_REGION"
SHOW_CROSS_REGION = f"SHOW PARAMETERS LIKE '{CROSS_REGION_PARAMETER}' IN ACCOUNT"
# Model-name prefix -> the parameter values that let an account elsewhere reach those models.
CROSS_REGION_MODELS: dict[str, frozenset[str]] = {
    "openai-": frozenset({"ANY_REGION", "AZURE_GLOBAL", "AZURE_US"}),
}
_NOT_READ = object()


def read_cross_region(session: Session) -> str | None:
    """The account's CORTEX_ENABLED_CROSS_REGION, e.g. 'DISABLED' or 'AWS_US,AZURE_US'; None on Snowpark's
    local emulator, which has no SQL (`session.sql` raises NotImplementedError) and no such parameter."""
    try:
        rows = session.sql(SHOW_CROSS_REGION).collect()
    except NotImplementedError:
        return None
    for row in rows:
        values = {str(key).lower(): value for key, value in row.as_dict().items()}
        if str(values.get("key", "")).upper() == CROSS_REGION_PARAMETER:
            return str(values.get("value") or "")
    return ""


def cross_region_problems(model: str, value: str | None) -> list[str]:
    """What is wrong with `value` (the parameter; None = not known) for COMPLETE with `model`."""
    if value is None:
        return []
    needed = next((values for prefix, values in CROSS_REGION_MODELS.items() if model.lower().startswith(prefix)), None)
    allowed = {part.strip().upper() for part in value.split(",") if part.strip()} - {"DISABLED"}
    if needed is None:
        if not allowed:
            log.info(
                "%s is DISABLED: if COMPLETE answers that %s is unavailable in your region, an ACCOUNTADMIN "
                "must run %s",
                CROSS_REGION_PARAMETER,
                model,
                CROSS_REGION_STATEMENT,
            )
        return []
    if allowed & needed:
        return []
    reach = " or ".join(f"'{v}'" for v in sorted(needed))
    if not allowed:
        return [
            f"cortex-complete uses {model}, which most Snowflake regions serve only through cross-region inference, "
            f"and {CROSS_REGION_PARAMETER} is DISABLED in this account: unless the account is in a region that hosts "
            f"{model}, every translation will fail with 'The model you requested is unavailable in your region'. "
            f"An ACCOUNTADMIN must run: {CROSS_REGION_STATEMENT} (or set it to {reach}; see "
            "https://docs.snowflake.com/en/user-guide/snowflake-cortex/cross-region-inference)"
        ]
    suggested = ",".join([*sorted(allowed), "AZURE_US"])
    return [
        f"cortex-complete uses {model}, and {CROSS_REGION_PARAMETER} is '{value}', which does not include "
        f"{reach}: unless the account is in a region that hosts {model}, translations will fail with 'The model "
        f"you requested is unavailable in your region'. An ACCOUNTADMIN must run: ALTER ACCOUNT SET "
        f"{CROSS_REGION_PARAMETER} = '{suggested}'; (or {CROSS_REGION_STATEMENT})"
    ]


def check_cortex(
    session: Session, settings: Settings, translator: Translator | None = None, *, cross_region: Any = _NOT_READ
) -> list[str]:
    """The problems the account has for the configured Cortex translation, each logged as a warning.
    Blocking (one AI_TRANSLATE probe when the function is not decided yet; one SHOW PARAMETERS, no warehouse
    needed, for cortex-complete). `cross_region` injects the parameter's value instead of reading it."""
    problems: list[str] = []
    method = settings.effective_translate_method
    if isinstance(translator, CortexTranslate):
        try:
            function = translator.resolve()
        except Exception as exc:
            problems.append(
                f"could not tell whether this account has AI_TRANSLATE ({_describe(exc)}); the first translation "
                "will find out"
            )
        else:
            log.info("Cortex translation by %s (TRANSLATIONS.METHOD %s)", function, translator.method)
            if function == TRANSLATE_FUNCTION:
                problems.append(
                    f"AI_TRANSLATE is not available in this account: translating with the legacy {TRANSLATE_FUNCTION} "
                    f"({len(LANGUAGES[function])} languages; Snowflake deprecates it by the end of 2026: "
                    "https://docs.snowflake.com/en/sql-reference/functions/translate-snowflake-cortex)"
                )
    if method == "cortex-complete":
        value = cross_region
        if value is _NOT_READ:
            try:
                value = read_cross_region(session)
            except Exception as exc:
                value = None
                problems.append(
                    f"could not read {CROSS_REGION_PARAMETER} ({_describe(exc)}): if COMPLETE answers that "
                    f"{settings.snowflake.cortex_model} is unavailable in your region, an ACCOUNTADMIN must run "
                    f"{CROSS_REGION_STATEMENT}"
                )
            else:
                if value is None:
                    log.info("%s not read: Snowpark local testing has no account parameters", CROSS_REGION_PARAMETER)
        problems += cross_region_problems(settings.snowflake.cortex_model, value)
    for problem in problems:
        log.warning("Cortex: %s", problem)
    return problems


async def check_cortex_at_start(
    settings: Settings, sessions: SessionSource | None, translator: Translator | None
) -> list[str]:
    """`check_cortex` in a worker thread, for the gateway's start: never raises (Snowflake unreachable is one
    more problem, logged), and does nothing when translation is not Cortex's."""
    if sessions is None or settings.effective_translate_method not in ("cortex-translate", "cortex-complete"):
        return []
    try:
        return await asyncio.to_thread(lambda: check_cortex(sessions.get(), settings, translator))
    except Exception as exc:
        problem = f"Cortex not checked at start ({_describe(exc)}): translations will find out"
        log.warning("Cortex: %s", problem)
        return [problem]
