"""`make teardown`: read `snow sql --format json -q "SELECT WHISPER_DRAIN(...) AS DRAIN"` on stdin, print what
the gateway says, exit 0 only when it drained (nothing runs, nothing waits to be exported).
`--format json` prints the result rows as a JSON list of objects (a list per statement when there are several).
https://docs.snowflake.com/en/developer-guide/snowflake-cli/command-reference/sql-commands/sql"""

from __future__ import annotations

import json
import sys
from typing import Any


def drain_value(text: str) -> dict[str, Any]:
    """The WHISPER_DRAIN value in snow's JSON output (a list of rows; VARIANT values come as JSON text)."""
    rows = json.loads(text)
    while isinstance(rows, list) and rows and isinstance(rows[0], list):  # several statements: a list per one
        rows = rows[-1]
    value = rows[0]["DRAIN"]
    return json.loads(value) if isinstance(value, str) else value


def main() -> int:
    text = sys.stdin.read()
    try:
        value = drain_value(text)
    except (ValueError, LookupError, TypeError):
        print(f"WHISPER_DRAIN gave no answer (is the gateway running?): {text.strip()[:500]}", file=sys.stderr)
        return 1
    print(f"WHISPER_DRAIN: {json.dumps(value)}")
    if value.get("drained") is True:
        return 0
    print("the gateway did not drain: jobs still run or rows wait to be exported", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
