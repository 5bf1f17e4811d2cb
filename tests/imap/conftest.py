from tests.imap.imapkit import needs_dovecot

__all__ = ["needs_dovecot"]
