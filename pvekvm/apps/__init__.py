"""The apps, a layer above ``workers``: the service API (``api``) and the operator CLI
(``cli``; ``python -m pvekvm``). The core under them imports neither."""
