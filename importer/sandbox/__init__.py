"""A local stand-in for Amili's creditor API (Starlette + uvicorn on loopback).

For the demo, the posting tests and the benchmarks; the importer itself never imports it.
It follows Amili's public docs (``/work/shared/amili-api.md`` and the seeds), not the
importer's convenience. The full behaviour, including every choice made where the docs are
silent, is in ``README.md`` beside this file. In short:

- Logins: ``GET /authenticates/api-code`` (JWT in ``X-API-Key``) and ``POST`` with
  ``{"api_code": ...}`` answer ``{"token", "expires", "expires_in"}``; other endpoints need
  ``X-API-Key: <token>`` or answer Eve's 401.
- ``POST /creditor--payments|--creditings|--cancellations``: Eve validation (422), case by id or
  by invoice number + creditor, then the business rules; 201 with exactly the documented fields.
- Business rules: a payment or crediting is applied to capital, then interest, then costs;
  ``settled_amount`` is what was applied; more than remains → the rest is not applied, status
  ``warning``; once the capital is paid the rest is written off and the case closes (as in the
  case-flow guide); a closed or cancelled case → status ``error``, nothing applied. A
  cancellation cancels an open case (``completed``) and is a ``warning`` on a closed one. A case
  of another creditor is a 422.
- Faults (``Faults``): latency, 503/429 before storing, 500/dropped connection after storing,
  a per-second rate limit, seeded draws; set by flags or ``POST /_sandbox/faults``.

Entry points: :func:`importer.sandbox.server.start` (background thread, for tests) and
:func:`importer.sandbox.server.serve` (foreground, for ``amili-import sandbox``).
"""
