"""``hub identity insi``: ask INSi (the configured sandbox by default) for an INS by strict traits.

Prints one JSON object: the outcome, and the INS with its OID and traits when exactly one identity matched.
Exit codes: 0 found, 1 failure or invalid input, 2 none or several matched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any

from adapters.insi.http import HttpInsiResolver
from hub.admin.client import find_token
from hub.cli import DEFAULT_CONFIG
from hub.config import HubConfig, load_config
from hub.errors import ConfigError
from hub.identity.insi import InsiQuery, traits_to_json
from hub.identity.traits import Sex
from hub.registry import register

__all__ = ["add_insi_command", "insi_search"]


@register("command", "identity insi")
def add_insi_command(parser: argparse.ArgumentParser) -> None:
    """ask INSi for an INS by strict traits (exit 2 when none or several match)"""
    parser.add_argument("--birth-name", required=True, help="birth name (nom de naissance)")
    parser.add_argument("--given-names", required=True, help="one or more birth given names, space separated")
    parser.add_argument("--sex", required=True, help="M or F")
    parser.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    parser.add_argument("--birthplace", help="INSEE code (COG) of the birthplace")
    parser.add_argument("--url", help="the INSi endpoint (default: the config's INSi sandbox)")
    parser.add_argument(
        "--token-file", help="bearer token for the sandbox (default: $HUB_TOKEN, then the bootstrap token file)"
    )
    parser.add_argument(
        "--config", default=os.environ.get("HUB_CONFIG", DEFAULT_CONFIG), help="config, to find the INSi sandbox"
    )
    parser.set_defaults(fn=insi_search)


async def insi_search(args: argparse.Namespace) -> int:
    """Run one INSi query; print the answer as JSON."""
    url = args.url
    config: HubConfig | None = None
    try:
        config = load_config(args.config).hub  # the INSi sandbox's address, and the hub's bootstrap token
    except (ConfigError, OSError):
        if not url:
            raise
    if not url:
        assert config is not None
        names = [n for n, e in config.sandboxes.items() if e.type == "insi"]
        if not names:
            print("no INSi sandbox in the config: give --url", file=sys.stderr)
            return 1
        url = f"http://{config.http.listen}/sandboxes/{names[0]}/search"
    query = InsiQuery(
        birth_name=args.birth_name,
        given_names=args.given_names,
        sex=Sex.parse(args.sex),
        birth_date=dt.date.fromisoformat(args.birth_date),
        birthplace_code=args.birthplace,
    )
    # The sandbox on the hub's port takes the admin API's token (hub/admin/sandbox_guard.py).
    result = await HttpInsiResolver(url, token=find_token(config, token_file=args.token_file)).resolve(query)
    out: dict[str, Any] = {"outcome": result.outcome.value}
    if result.identity is not None:
        out |= {"ins": result.identity.ins, "oid": result.identity.oid, **traits_to_json(result.identity.traits)}
    print(json.dumps(out, ensure_ascii=False))
    return 0 if result.identity is not None else 2
