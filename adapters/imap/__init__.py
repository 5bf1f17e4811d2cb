"""IMAP access to the hosted mailboxes: Dovecot run and authenticated by the hub (`imap` listener)."""
