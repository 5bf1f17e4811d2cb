"""Built-in adapters. Importing a module registers it; this list is the whole catalogue."""

from adapters import http_post as _http_post  # noqa: F401
from adapters.fhir import inbound as _fhir  # noqa: F401  (the package registers "fhir" in/out, sandbox "eparcours")
from adapters.imap import dovecot as _imap  # noqa: F401
from adapters.insi import cli as _insi_cli  # noqa: F401  (`hub identity insi`)
from adapters.mllp import cli as _mllp_cli  # noqa: F401  (`hub send`)
from adapters.mllp import inbound as _mllp_inbound  # noqa: F401
from adapters.mllp import outbound as _mllp_outbound  # noqa: F401
from adapters.sandboxes import insi as _insi_sandbox  # noqa: F401
from adapters.sandboxes import mllp_peer as _mllp_peer  # noqa: F401
from adapters.sandboxes import psc as _psc_sandbox  # noqa: F401
from adapters.smtp import inbound as _smtp  # noqa: F401  (the package registers smtp_mta/_submission, mssante, mailbox, mssante_peer)
from adapters.smtp import mdn_after as _mdn_after  # noqa: F401  (outcome hook: the MDN after the DPI answered)
from adapters.xds import outbound as _xds_outbound  # noqa: F401  (the package also registers sandbox "dmp")
