"""Webhooks and the pull feed for billing (issue 29).

Every event to billing (the outbox, :mod:`workers.outbox`) gets a feed position in commit
order (``outbox.seq``, handed out by the deliverer's sequencer); billing reads the feed with
``GET /v1/events?after=CURSOR`` or receives each event as an HTTP POST signed as the Standard
Webhooks specification says (``webhook-id`` = the event's ``event_id``, ``webhook-timestamp``,
``webhook-signature``), in order per service, at least once (:mod:`workers.webhooks`).

- :mod:`.config` the settings (``[[webhooks]]``, ``[webhook_delivery]``)
- :mod:`.signing` secrets and the signature headers (the ``standardwebhooks`` package)
- :mod:`.target` which addresses a URL may reach, and one bounded POST
- :mod:`.store` the endpoints (the one writer of ``webhook_endpoints``)
- :mod:`.feed` the pull feed's pages and cursors (read only)
"""
