"""MSSanté operator: SMTP listeners (`smtp_mta`, `smtp_submission`), destinations (`mssante`, `mailbox`), peer sandbox.

Importing this package registers them all (one line in ``adapters/__init__.py``).
Long-form rationale: ``adapters/smtp/README.md``.
"""

from adapters.sandboxes import mssante_peer as _mssante_peer  # noqa: F401  (registers sandbox mssante_peer)
from adapters.smtp import inbound as _inbound  # noqa: F401  (registers smtp_mta, smtp_submission)
from adapters.smtp import mailstore as _mailstore  # noqa: F401  (registers outbound mailbox)
from adapters.smtp import outbound as _outbound  # noqa: F401  (registers outbound mssante)
