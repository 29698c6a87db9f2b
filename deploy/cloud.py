"""The account's cloud against deploy/config.yaml, before `make deploy` creates anything.

    snow sql -q "SELECT CURRENT_REGION() AS REGION" --format json | python -m deploy.cloud
    python -m deploy.cloud --region AZURE_EASTUS2

GPU instance families differ by cloud (GPU_NV_S is AWS only: deploy/config.py GPU_FAMILIES), so a config written
for one cloud cannot create its GPU compute pool on another. CURRENT_REGION() names the account's region with the
cloud as its prefix, `AWS_US_WEST_2`, `AZURE_EASTUS2`, `GCP_US_CENTRAL1`, or `PUBLIC.AWS_US_WEST_2` in an
organization that spans region groups (https://docs.snowflake.com/en/sql-reference/functions/current_region).
Exit 0 when that cloud is snowflake.cloud of deploy/config.yaml, 1 when it is another, 2 when no region was read.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from deploy.config import GPU_FAMILIES, ConfigError, load

REGION = re.compile(r"(?:[A-Z][A-Z0-9_-]*\.)?(AWS|AZURE|GCP)_[A-Z0-9_]+")


def cloud_of_region(region: str) -> str:
    """`aws`, `azure` or `gcp` for a CURRENT_REGION() value."""
    match = REGION.fullmatch(region.strip().upper())
    if not match:
        raise ConfigError(f"{region!r} is not a Snowflake region such as AWS_US_WEST_2")
    return match.group(1).lower()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def region_in_output(text: str) -> str:
    """The region in the output of `snow sql -q "SELECT CURRENT_REGION()"`: JSON (`--format json`, a list of rows)
    or the default table; exactly one value must look like a region."""
    try:
        candidates = _strings(json.loads(text))
    except json.JSONDecodeError:
        candidates = re.split(r"[\s|+]+", text)
    regions = sorted({c.strip() for c in candidates if REGION.fullmatch(c.strip().upper())})
    if len(regions) != 1:
        shown = text.strip()[:200] or "nothing"
        raise ConfigError(f"expected the output of SELECT CURRENT_REGION() (one region), got: {shown}")
    return regions[0]


def mismatch(config: dict[str, Any], region: str) -> str | None:
    """Why this config cannot be deployed in `region`, or None."""
    cloud, configured = cloud_of_region(region), config["snowflake"]["cloud"]
    if cloud == configured:
        return None
    family = config["compute_pools"][config["services"]["worker"]["pool"]]["instance_family"]
    return (
        f"the account is in {region}, on {cloud}, but deploy/config.yaml says snowflake.cloud: {configured} "
        f"(GPU pool family {family}). Set snowflake.cloud: {cloud} and a GPU family of {cloud} for the GPU compute "
        f"pool: {', '.join(GPU_FAMILIES[cloud])}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cloud", description=__doc__.splitlines()[0])
    parser.add_argument("--region", help="the region (default: read `snow sql` output from stdin)")
    args = parser.parse_args(argv)
    try:
        config = load()
        region = args.region or region_in_output(sys.stdin.read())
        problem = mismatch(config, region)
    except ConfigError as exc:
        print(f"deploy.cloud: {exc}", file=sys.stderr)
        return 2
    if problem:
        print(f"deploy.cloud: {problem}", file=sys.stderr)
        return 1
    print(f"deploy.cloud: {region} is on {config['snowflake']['cloud']}, as deploy/config.yaml says")
    return 0


if __name__ == "__main__":
    sys.exit(main())
