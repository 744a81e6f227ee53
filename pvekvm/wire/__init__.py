"""What travels between billing and the engine, declared once (pydantic models).

- :mod:`pvekvm.wire.orders`: the order events billing sends (``{ns}.orders``, ``POST
  /v1/events``): intake, ``OrderClient``, the CLI and the API's request body all use them;
- :mod:`pvekvm.wire.billing`: the events the engine sends billing (``{ns}.events``);
- :mod:`pvekvm.wire.schemas`: their JSON Schemas, generated from those models and shipped in
  ``schemas/events/`` (``python -m pvekvm.wire`` writes them; a test holds the files to it).
"""
