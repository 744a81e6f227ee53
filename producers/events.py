"""The order events billing sends, as billing's code imports them. They are declared once, in
the core (:mod:`pvekvm.wire.orders`: the engine's intake, the API and the shipped JSON Schemas
use the same models); this module re-exports them for the producers and for billing."""

from pvekvm.wire.orders import *  # noqa: F403
from pvekvm.wire.orders import ENVELOPE_FIELDS, __all__  # noqa: F401
