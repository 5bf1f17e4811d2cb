"""The MDN of a mail whose documents went to the DPI, sent once the DPI has answered for all of them.

RFC 8098 and the volet struct-msg-mdn make the MDN "processed" an acknowledgement that the
mail was integrated: it must not go back when the hub merely received it. The intake marks
each document of the mail with this hook (metadata ``on_final``); the hub calls the hook
each time one of a document's deliveries reaches a final status. Once every delivery of
every document of the mail is final, the hook returns the MDN: "processed" when all were
delivered, "processed/error" when one was refused or dead-lettered. Its dedup key names the
mail, so that two documents finishing together send one MDN.
"""

from __future__ import annotations

from adapters.smtp.intake import MDN_ERROR, MDN_HOOK, mdn_message
from hub.content_types import ContentType
from hub.message import utcnow
from hub.outcomes import FINAL_STATUSES, FinalOutcome, FollowUp, OutcomeServices
from hub.registry import register
from hub.statuses import DeliveryStatus

__all__ = ["mdn_after_documents"]


@register("outcome_hook", MDN_HOOK)
async def mdn_after_documents(outcome: FinalOutcome, services: OutcomeServices) -> list[FollowUp]:
    """The mail's MDN once all its documents have their outcome; nothing before."""
    mail_id = outcome.message.correlation_id
    documents = [
        r.message.id
        for r in await services.correlated(mail_id)
        if r.message.metadata.get("on_final") == MDN_HOOK
    ]
    deliveries = [d for ds in (await services.deliveries(documents)).values() for d in ds]
    if not deliveries or any(d.status not in FINAL_STATUSES for d in deliveries):
        return []  # the last document to finish sends it
    mail = await services.get_message(mail_id)
    if mail is None:  # purged meanwhile: nothing to acknowledge against
        return []
    md = outcome.message.metadata
    failed = any(d.status != DeliveryStatus.DELIVERED for d in deliveries)
    body, meta = mdn_message(
        mail.message.body,
        to=md["mdn_to"],
        to_local=md.get("mdn_to_local") == "true",
        final_recipient=md["mdn_final_recipient"],
        original_recipient=md.get("mdn_original_recipient", md["mdn_final_recipient"]),
        original_message_id=md.get("mail_message_id") or "<unknown>",
        original_subject=md.get("mail_subject", ""),
        reporting_ua=md.get("mdn_reporting_ua", ""),
        mail_id=mail_id,
        now=utcnow(),
        error=MDN_ERROR if failed else None,
    )
    mdn = mail.message.derive(body=body, content_type=ContentType.MAIL, **meta)
    return [FollowUp(mdn, dedup_key=f"{mail.endpoint}|{mail_id}|mdn")]
