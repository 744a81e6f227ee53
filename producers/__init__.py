"""What the billing system calls: typed order events, a publishing client and a CLI."""

from producers._shadow import refuse_shadowed

refuse_shadowed()  # before anything imports pvekvm

from producers.api import OrderClient
from producers.events import EVENT_TYPES, Event, InvalidEvent, parse_event

__all__ = ["EVENT_TYPES", "Event", "InvalidEvent", "OrderClient", "parse_event"]
