"""The engine's processes: ``python -m workers`` (pools), ``python -m workers.scheduler``."""

from producers._shadow import refuse_shadowed

refuse_shadowed()  # before anything imports pvekvm
