"""Operating the hub over HTTP: the admin API (``/api``), its roles and the audit trail.

* :mod:`hub.admin.api` — the operations table and :func:`~hub.admin.api.mount`;
* :mod:`hub.admin.auth` — tokens, users, roles (viewer, operator, admin);
* :mod:`hub.admin.audit` — the hash-chained audit trail and its verification;
* :mod:`hub.admin.models` — request and response bodies (the OpenAPI components);
* :mod:`hub.admin.openapi` — the OpenAPI document written from the table.

``python -m hub.admin hash-password`` / ``hash-token`` / ``new-token`` print
the values the ``admin`` section of ``config/hub.yaml`` holds.
"""
