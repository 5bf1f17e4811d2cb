"""MSSanté (secure health mail) as pure functions: the mail the hub sends, MDN/DSN reports, the F5 MDM step.

* :mod:`mappings.mssante.mail` — build the RFC 5322 message carrying an
  IHE_XDM.ZIP (subject, body and X-MSS-* headers per the Ségur volets), and
  read one (envelope-independent parts: attachments, Message-ID).
* :mod:`mappings.mssante.reports` — build MDNs (RFC 8098) and DSNs (RFC 3464),
  and read those received for mail the hub sent.
* :mod:`mappings.mssante.mdm` — the ``cda_to_v2_mdm_t02`` step (CDA → HL7 v2.6
  MDM^T02 for the DPI).

Importing this package registers the step.
"""

from mappings.mssante import mdm as _mdm  # noqa: F401  (registers cda_to_v2_mdm_t02)
