"""The operator CLI, ``python -m pvekvm`` (``main``)."""
