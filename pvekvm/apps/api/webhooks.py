"""Webhook endpoints (``/v1/webhooks``), the pull feed (``GET /v1/events``) and the OpenAPI
3.1 ``webhooks`` section that describes what an endpoint receives. Billing tokens only; each
sees and changes its own endpoints, and its feed and webhooks carry the services of its
``[api.scopes]`` only (see :mod:`pvekvm.webhooks`)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pvekvm.apps.api import schemas
from pvekvm.apps.api.auth import Principal
from pvekvm.apps.api.routes import Cfg, Who
from pvekvm.webhooks import config as whconfig
from pvekvm.webhooks import feed, signing, store, target

router = APIRouter(prefix="/v1", responses={
    400: {"model": schemas.Problem, "description": "a body that is not JSON"},
    401: {"model": schemas.Problem, "description": "no token or a wrong token"},
    403: {"model": schemas.Problem, "description": "a client token (billing tokens only)"},
    422: {"model": schemas.Problem, "description": "the request is refused: detail says why"},
    503: {"model": schemas.Problem, "description": "the database is unavailable"}})
EndpointId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the endpoint's id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.Problem,
                   "description": "no such endpoint of this token"}}
SECRET_PATTERN = r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$"
MAX_WAIT_S = 30.0
POLL_S = 0.25
#: long polls waiting at once in one API process; past it a request answers at once (an empty
#: page), so held-open requests cannot make the process query the database without bound
MAX_WAITING = 64
_waiting = 0


EventTypes = Annotated[list[Annotated[str, Field(
    max_length=64, pattern=r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$")]],
    Field(min_length=1, max_length=50, description="types to receive: a type "
          "(service.ready), a prefix (operation.*) or * for all")]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$", description="unique per token")
    url: str = Field(max_length=whconfig.MAX_URL, pattern=r"^https?://[^\s#]+$",
                     description="where to POST; a public address (see the allow rule)")
    event_types: EventTypes = ["*"]
    secret: str | None = Field(None, pattern=SECRET_PATTERN, description="whsec_ + base64 "
                               "of 24-64 random bytes; left out: one is generated and "
                               "returned once")


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: str | None = Field(None, pattern=SECRET_PATTERN,
                               description="the new secret; left out: one is generated")
    keep_previous: bool = Field(True, description="keep signing with the previous secret "
                                "too (two signatures) until the next rotation")


class WebhookView(BaseModel):
    id: int
    name: str
    url: str
    event_types: list[str]
    origin: Literal["settings", "api"] = Field(description="settings: [[webhooks]] in the "
                                               "settings file (read only here)")
    scope: str | None = Field(description="the billing token whose services it receives")
    created_at: schemas.UtcDatetime
    backlog: int = Field(description="events queued or parked for it")
    parked_services: int = Field(description="services whose delivery waits for an operator "
                                 "(python -m pvekvm webhooks retry)")


class WebhookCreated(WebhookView):
    secret: str = Field(description="the signing secret, shown only in this answer")


class SecretRotated(BaseModel):
    id: int
    secret: str = Field(description="the new signing secret, shown only in this answer")
    signing_secrets: int = Field(description="secrets each delivery is signed with now")


class BillingEvent(BaseModel):
    """An event to billing, exactly as published on ``<ns>.events`` (routing key = type);
    type-specific fields besides these (README: Events to billing)."""

    model_config = ConfigDict(extra="allow")

    event_id: str = Field(description="stable: the webhook-id header, the exchange's "
                          "message_id; de-duplicate by it")
    type: str
    service_id: int | None
    operation_id: int | None = None
    idempotency_key: str | None = None
    occurred_at: str


class EventPage(BaseModel):
    events: list[BillingEvent] = Field(description="oldest first")
    next_cursor: str = Field(description="pass as after= for the next page (opaque, stable)")
    has_more: bool = Field(description="true: more events are already there, ask again now")


def _billing(who: Principal) -> Principal:
    if who.is_client:
        raise HTTPException(403, "only a billing token may use webhooks and the event feed")
    return who


def _token(who: Principal) -> str:
    return who.name.removeprefix("billing:")


def _view(ep: store.Endpoint) -> WebhookView:
    from pvekvm.models import database

    backlog, parked = database.execute_sql(
        "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = %s AND status IN "
        "('queued', 'parked')), (SELECT COUNT(*) FROM webhook_streams WHERE endpoint_id = %s "
        "AND parked_reason IS NOT NULL)", (ep.id, ep.id)).fetchone()
    return WebhookView(id=ep.id, name=ep.name, url=ep.url, event_types=list(ep.event_types),
                       origin="api" if ep.origin == "api" else "settings", scope=ep.scope,
                       created_at=ep.created_at,
                       backlog=int(backlog), parked_services=int(parked))


def _own(who: Principal, endpoint_id: int) -> store.Endpoint:
    ep = store.get(endpoint_id)
    if ep is None or ep.id not in {e.id for e in store.owned_by(_token(who))}:
        raise HTTPException(404, f"no webhook endpoint {endpoint_id}")
    return ep


@router.post("/webhooks", status_code=201, response_model=WebhookCreated,
             responses={409: {"model": schemas.Problem,
                              "description": "the name is taken, or the token's limit "
                              "of endpoints is reached"}})
def register_webhook(body: WebhookRequest, who: Who, settings: Cfg) -> WebhookCreated:
    """Register an endpoint for this token: every event of the token's services whose type
    matches is POSTed to ``url``, signed (see the ``webhooks`` section), from now on. Only
    public addresses are accepted unless ``[webhook_delivery] api_allowed_networks`` admits
    the address (checked again, after resolving, at every delivery)."""
    _billing(who)
    delivery = settings.webhooks.delivery
    problem = (whconfig.url_syntax_problem(body.url)
               or target.registration_problem(body.url, delivery.allowed_networks())
               or (whconfig.secret_problem(body.secret) if body.secret else None))
    if problem:
        raise HTTPException(422, problem)
    secret = body.secret or signing.new_secret()
    try:
        ep = store.register(settings.secret_key_file, _token(who), body.name, body.url,
                            list(dict.fromkeys(body.event_types)), secret,
                            delivery.api_max_endpoints)
    except (store.NameTaken, store.TooMany) as exc:
        raise HTTPException(409, str(exc)) from None
    return WebhookCreated(**_view(ep).model_dump(), secret=secret)


@router.get("/webhooks", response_model=list[WebhookView])
def list_webhooks(who: Who) -> list[WebhookView]:
    """This token's endpoints (those it registered, and those the settings scope to it)."""
    _billing(who)
    return [_view(ep) for ep in store.owned_by(_token(who))]


@router.get("/webhooks/{endpoint_id}", response_model=WebhookView, responses=NOT_FOUND)
def get_webhook(endpoint_id: EndpointId, who: Who) -> WebhookView:
    _billing(who)
    return _view(_own(who, endpoint_id))


@router.delete("/webhooks/{endpoint_id}", status_code=204,
               responses={**NOT_FOUND, 409: {"model": schemas.Problem,
                                             "description": "defined in the settings file"}})
def delete_webhook(endpoint_id: EndpointId, who: Who) -> None:
    """Delete an endpoint this token registered: nothing more is sent to it."""
    _billing(who)
    ep = _own(who, endpoint_id)
    if ep.origin != "api":
        raise HTTPException(409, f"webhook endpoint {ep.name} is defined in the settings file")
    store.delete(ep.id)


@router.post("/webhooks/{endpoint_id}/rotate-secret", response_model=SecretRotated,
             responses={**NOT_FOUND, 409: {"model": schemas.Problem,
                                           "description": "defined in the settings file"}})
def rotate_webhook_secret(endpoint_id: EndpointId, who: Who, settings: Cfg,
                          body: RotateRequest | None = None) -> SecretRotated:
    """Sign with a new secret from now on; with ``keep_previous`` (the default) the previous
    one signs too, so receivers verify with either while they move over."""
    _billing(who)
    ep = _own(who, endpoint_id)
    if ep.origin != "api":
        raise HTTPException(409, f"webhook endpoint {ep.name} is defined in the settings file "
                            "(rotate there: secrets = [new, old])")
    body = body or RotateRequest(secret=None, keep_previous=True)
    problem = whconfig.secret_problem(body.secret) if body.secret else None
    if problem:
        raise HTTPException(422, problem)
    secret = body.secret or signing.new_secret()
    store.rotate(settings.secret_key_file, ep.id, secret, body.keep_previous)
    return SecretRotated(id=ep.id, secret=secret, signing_secrets=len(
        store.secrets_of(settings.secret_key_file, ep.id)))


def _ranges(who: Principal) -> tuple[tuple[int, int], ...] | None:
    return who.ranges


@router.get("/events", response_model=EventPage)
async def event_feed(request: Request, who: Who, settings: Cfg,
                     after: Annotated[str | None, Query(
                         pattern=feed.CURSOR_PATTERN, description="a next_cursor from an "
                         "earlier page; left out: from the oldest event")] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
                         "seconds to wait for an event when there is none yet (long poll; "
                         "bounded by [webhook_delivery] feed_max_wait_s)"))] = 0
                     ) -> EventPage:
    """The events of this token's services after ``after``, oldest first: the same JSON and
    ``event_id`` as the exchange and the webhooks. For billing that can only run cron: keep
    ``next_cursor`` and pass it as ``after`` next time; a cursor is stable (the same cursor
    always yields the same events). Numbered by the webhook deliverer (``python -m
    workers.webhooks``), which must run for the feed to move."""
    _billing(who)
    try:
        start = await run_in_threadpool(feed.position, after)
    except feed.BadCursor as exc:
        raise HTTPException(422, str(exc)) from None
    global _waiting
    deadline = time.monotonic() + min(wait, settings.webhooks.delivery.feed_max_wait_s)
    counted = False
    try:
        while True:
            got = await run_in_threadpool(feed.page, start, limit, _ranges(who))
            if not counted and not got.events and _waiting < MAX_WAITING:
                _waiting, counted = _waiting + 1, True
            if got.events or got.has_more or not counted or time.monotonic() >= deadline \
                    or await request.is_disconnected():
                return EventPage(events=[BillingEvent.model_validate(e) for e in got.events],
                                 next_cursor=got.next_cursor, has_more=got.has_more)
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
    finally:
        if counted:
            _waiting -= 1


# --------------------------------------------------------------------------- OpenAPI webhooks

def describe_webhooks(app: FastAPI) -> None:
    """The OpenAPI 3.1 ``webhooks`` section: what an endpoint receives and must answer."""
    hooks = APIRouter()

    @hooks.post("billing-event", status_code=204, responses={
        200: {"description": "any 2xx acknowledges the event: the service's next event "
              "follows"},
        500: {"description": "anything but 2xx (or no answer within [webhook_delivery] "
              "timeout_s) is retried with backoff, then the service's stream is parked"}})
    def billing_event(
        body: BillingEvent,
        webhook_id: Annotated[str, Header(alias="webhook-id", description=(
            "the event's event_id (the same on every retry: de-duplicate by it)"))],
        webhook_timestamp: Annotated[int, Header(alias="webhook-timestamp", description=(
            "Unix seconds of this attempt; refuse it outside your replay window (5 minutes "
            "in the reference verifiers)"))],
        webhook_signature: Annotated[str, Header(alias="webhook-signature", description=(
            "space-separated v1,<base64 HMAC-SHA256 of '{webhook-id}.{webhook-timestamp}."
            "{body}' under the secret's bytes (whsec_ + base64)>; one per valid secret "
            "(two during a rotation): accept when any matches"))],
    ) -> None:
        """Each event to billing whose type the endpoint asked for, as an HTTP POST (Standard
        Webhooks, https://www.standardwebhooks.com): the body is the event's JSON exactly as
        published on the events exchange. In order per service: a service's next event is
        sent only after this one was answered 2xx. At least once: a deliverer that died
        mid-attempt sends it again with the same ``webhook-id``. The response body is not
        read; redirects are not followed."""

    app.webhooks.include_router(hooks)


def include(app: FastAPI) -> None:
    app.include_router(router)
    describe_webhooks(app)
