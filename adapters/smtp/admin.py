"""Mailbox administration on the admin API: list, create, suspend, resume, delete, export for the Annuaire.

The operations are contributed by the ports that serve mailboxes (``admin_operations()`` of the SMTP and
IMAP listeners, when a ``mailbox_directory`` is configured) and mounted by ``hub.admin.api`` behind its
guard (token, role, validation). Every change is written to the audit trail *before* it is made; when the
trail cannot be written nothing is done (503). Mailboxes declared in the config are listed (``source:
config``) but changed in git, not here (409).

=======  ==========================================  ========  =====================================
method   path                                        role      what
=======  ==========================================  ========  =====================================
GET      /api/mailboxes                              viewer    every hosted mailbox, without secrets
POST     /api/mailboxes                              admin     create one in the directory (201)
POST     /api/mailboxes/{address}/suspend            admin     nobody logs in, mail to it gets 550 5.2.1
POST     /api/mailboxes/{address}/resume             admin     active again
DELETE   /api/mailboxes/{address}                    admin     removed from the directory (its Maildir is
                                                               kept: the mail is the owner's)
GET      /api/mailboxes/annuaire                     operator  active mailboxes as the Annuaire santé
                                                               lists them (type PER/ORG/APP, idNat)
=======  ==========================================  ========  =====================================
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from adapters.smtp.common import HostedMailbox, Mailboxes
from adapters.smtp.directory import DirectoryError, MailboxDirectory, annuaire_rows
from hub.admin import audit
from hub.admin.api import ApiError, Call, Operation
from hub.errors import StoreError

__all__ = ["AnnuaireExport", "MailboxList", "MailboxView", "mailbox_operations"]


class MailboxView(BaseModel):
    address: str = Field(description="The mailbox address.")
    kind: str = Field(description="personal, organisational or application.")
    status: str = Field(description="active or suspended.")
    source: Literal["config", "directory"] = Field(description="Where it is declared (config: changed in git).")
    owner: str = Field(description="idNat of the owner (8+RPPS, 1+FINESS, 3+SIRET).")
    members: list[str] = Field(description="idNat_PS of the professionals who may open it (organisational).")
    certificates: list[str] = Field(description="Client certificate names that open it.")
    password_login: bool = Field(description="Whether a password is set (allowed only for the listed kinds).")
    quota_bytes: int | None = Field(description="Storage quota (none: unlimited).")
    retention_days: int | None = Field(description="Retention of its messages, in days (none: kept).")
    organization: str = Field(description="HL7 v2 XON of the organisation it serves.")


class MailboxList(BaseModel):
    mailboxes: list[MailboxView] = Field(description="Every hosted mailbox, by address.")


class AnnuaireRow(BaseModel):
    mailbox_mss_type: str = Field(description="PER, ORG or APP (ANS API messagerie sécurisée, mailbox-mss-type).")
    mailbox_mss: str = Field(description="The address.")
    owner_identifier_system: str = Field(description="urn:oid of idNat_PS or idNat_Struct.")
    owner_identifier: str = Field(description="The owner's idNat.")
    description: str = Field(description="The service it serves, from its organisation.")


class AnnuaireExport(BaseModel):
    rows: list[AnnuaireRow] = Field(description="Active mailboxes, by address.")


class StatusChange(BaseModel):
    reason: str = Field("", max_length=200, description="Why (kept in the audit trail).")


_ADDRESS = (("address", "string", "The mailbox address."),)


def _view(box: HostedMailbox, source: Literal["config", "directory"]) -> MailboxView:
    return MailboxView(
        address=box.address, kind=box.kind, status=box.status, source=source, owner=box.owner,
        members=list(box.members), certificates=list(box.certificates), password_login=box.password_hash is not None,
        quota_bytes=box.quota_bytes, retention_days=box.retention_days, organization=box.organization,
    )  # fmt: skip


async def _record(call: Call, action: str, address: str, detail: dict[str, Any]) -> None:
    """The audit record of a mailbox change, written before the change (no trail, nothing done)."""
    if call.hub.store is None:
        raise ApiError(503, "audit trail unavailable: nothing was done")
    try:
        await audit.record(call.hub.store, call.who, action, target=address, detail=detail)
    except StoreError:
        raise ApiError(503, "audit trail unavailable: nothing was done") from None


def _in_directory(mailboxes: Mailboxes, directory: MailboxDirectory, address: str) -> str:
    """The address (lower case) of a mailbox the directory manages; 409 when the config declares it, 404 when none."""
    address = address.lower()
    if address in mailboxes.declared:
        raise ApiError(409, "this mailbox is declared in the config: change it there")
    if address not in directory.mailboxes():
        raise ApiError(404, "no such mailbox")
    return address


def mailbox_operations(mailboxes: Mailboxes) -> tuple[Operation, ...]:
    """The admin API operations over these mailboxes (their directory must be set)."""
    directory = mailboxes.directory
    assert directory is not None

    async def list_(call: Call) -> MailboxList:
        managed = directory.mailboxes()
        return MailboxList(
            mailboxes=[
                _view(b, "config" if a in mailboxes.declared else "directory")
                for a, b in sorted({**managed, **mailboxes.declared}.items())
            ]
        )

    async def create(call: Call) -> Any:
        box: HostedMailbox = call.body
        await _record(call, "mailbox_create", box.address, {"kind": box.kind, "owner": box.owner})
        try:
            directory.create(box, declared=set(mailboxes.declared))
        except DirectoryError as exc:
            raise ApiError(409, str(exc)) from None
        return web.json_response(_view(box, "directory").model_dump(mode="json"), status=201)

    def set_status(status: str) -> Any:
        async def handler(call: Call) -> MailboxView:
            address = _in_directory(mailboxes, directory, call.request.match_info["address"])
            await _record(call, f"mailbox_{'suspend' if status == 'suspended' else 'resume'}", address,
                         {"reason": call.body.reason})  # fmt: skip
            try:
                return _view(directory.update(address, status=status), "directory")
            except DirectoryError as exc:
                raise ApiError(404, str(exc)) from None

        return handler

    async def delete(call: Call) -> MailboxView:
        address = _in_directory(mailboxes, directory, call.request.match_info["address"])
        await _record(call, "mailbox_delete", address, {})
        try:
            return _view(directory.delete(address), "directory")
        except DirectoryError as exc:
            raise ApiError(404, str(exc)) from None

    async def export(call: Call) -> AnnuaireExport:
        rows = annuaire_rows(list(mailboxes.by_address.values()))
        return AnnuaireExport(rows=[AnnuaireRow(**r) for r in rows])

    return (
        Operation("GET", "/api/mailboxes", list_, "Hosted mailboxes (no secrets).", "mailboxes", response=MailboxList),
        Operation(
            "POST", "/api/mailboxes", create, "Create a mailbox in the directory.", "mailboxes", role="admin",
            body=HostedMailbox, body_required=True, response=MailboxView, audited="mailbox_create",
        ),
        Operation(
            "POST", "/api/mailboxes/{address}/suspend", set_status("suspended"), "Suspend a mailbox: no login, "
            "mail to it refused (550 5.2.1).", "mailboxes", role="admin", body=StatusChange, response=MailboxView,
            path_params=_ADDRESS, audited="mailbox_suspend",
        ),
        Operation(
            "POST", "/api/mailboxes/{address}/resume", set_status("active"), "Make a suspended mailbox active.",
            "mailboxes", role="admin", body=StatusChange, response=MailboxView, path_params=_ADDRESS,
            audited="mailbox_resume",
        ),
        Operation(
            "DELETE", "/api/mailboxes/{address}", delete, "Delete a mailbox from the directory (its Maildir stays).",
            "mailboxes", role="admin", response=MailboxView, path_params=_ADDRESS, audited="mailbox_delete",
        ),
        Operation(
            "GET", "/api/mailboxes/annuaire", export, "Active mailboxes as the Annuaire santé lists them.",
            "mailboxes", role="operator", response=AnnuaireExport,
        ),
    )  # fmt: skip
