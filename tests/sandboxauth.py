"""The admin API's token for the sandboxes' HTTP listings (hub/admin/sandbox_guard.py), as tests fetch them."""

from __future__ import annotations

from typing import Any

from hub.admin.auth import bootstrap_token_path


def admin_token(hub: Any) -> str:
    """The bootstrap token a running hub made (test configs configure no admin users or tokens)."""
    return bootstrap_token_path(hub.config).read_text().strip()


def admin_headers(hub: Any) -> dict[str, str]:
    """``Authorization: Bearer`` with that token, for ``/sandboxes/...`` requests."""
    return {"Authorization": f"Bearer {admin_token(hub)}"}
