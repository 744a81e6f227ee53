"""The service API: HTTP/JSON for the billing panel's client and admin areas.

Run ``python -m pvekvm api --host 127.0.0.1 --port 8080 [--workers N]``: stateless, so one
process or many behind a balancer; the OpenAPI document is served at ``/openapi.json``.

Token model (bearer tokens, ``Authorization: Bearer <token>``):

* **Billing tokens** — the panel holds one secret and proxies its clients' requests. Settings keep
  only ``sha256:<hex>`` of each (``[api.tokens] whmcs = "sha256:…"``, made by
  ``python -m pvekvm api new-token``); a billing token may read any service and post events, or
  only the service ids of its ``[api.scopes]`` ranges.
* **Client tokens** — for a client area that calls the API directly: ``svc.<token id>.<secret>``,
  random, minted by a billing token (``POST /v1/services/{id}/client-token``), shown once,
  stored as its SHA-256. Valid for exactly one service and one life of it (any other service
  answers 404, events 403) until it expires (``[api] client_token_ttl_s``, 24 h by default), is
  revoked (``DELETE /v1/client-tokens/{token id}``), or the service is terminated (terminate
  revokes all its tokens) or re-created under the same id.

Every comparison is constant time. No token or a wrong token: 401. A service that does not exist
or is outside the token's scope: 404 (the two are indistinguishable). Reads of credentials and
console tokens issued (for the console proxy, pvekvm.console) are written to ``audit_log`` with
who asked, never the secret.

Refusals: every error answer is a Problem, ``{"detail": "<one sentence>"}``; a request that fails
validation is a 422 that also lists ``errors`` (``loc``, ``msg``, ``type`` per field: never the
value sent); a body that is not JSON is a 400. Timestamps always carry their offset (UTC).
Every 422, and every 4xx answer to a POST/PUT/DELETE, is recorded in ``audit_log`` (event
``api_refused``: caller, route, status, reason; at most 30 rows a minute per caller and worker
process, then one ``api_refusals_suppressed``); see ``pvekvm/apps/api/refusals.py``.
"""
