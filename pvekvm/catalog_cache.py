"""The catalog rows every step and intake read (products, templates, pools), kept per process
for ``[engine] catalog_cache_s``: a catalog reload reaches every worker within that time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from pvekvm.models import BaseModel, Product, ProductLocation

M = TypeVar("M", bound=BaseModel)

_catalog: dict[tuple[type, int | str], tuple[float, Any]] = {}  # (model, id or name)


def _kept(key: tuple[type, int | str], max_age_s: float, load: Callable[[], Any]) -> Any:
    """``load()``'s row, kept per process for ``max_age_s``; a missing row is not kept."""
    hit = _catalog.get(key)
    now = time.monotonic()
    if hit is None or now - hit[0] > max_age_s:
        row = load()
        if row is None:
            return None
        hit = _catalog[key] = (now, row)
    return hit[1]


def catalog_row(model: type[M], row_id: int, max_age_s: float) -> M:
    """Products and templates change rarely and are read by every step: keep them per process
    for ``max_age_s`` (a catalog reload reaches every worker within that time)."""
    row: M = _kept((model, int(row_id)), max_age_s, lambda: model.get_by_id(row_id))
    return row


def catalog_named(model: type[M], name: str, max_age_s: float) -> M | None:
    """The catalog row called ``name`` (products and templates have unique names), kept like
    :func:`catalog_row`; a name the catalog does not have is asked again every time (a new
    package is orderable at once)."""
    row: M | None = _kept((model, name), max_age_s,
                          lambda: model.get_or_none(model.name == name))  # type: ignore[attr-defined]
    return row


def at_location(product: Product, cluster: str, max_age_s: float) -> Product:
    """``product`` as ``cluster`` offers it (its own row in its home cluster, or a location
    with nothing recorded); a copy, kept like :func:`catalog_row`."""
    if product.cluster == cluster:
        return product

    def load() -> Product | None:
        loc = ProductLocation.get_or_none((ProductLocation.product_id == product.id)
                                          & (ProductLocation.cluster == cluster))
        there = Product(**product.__data__)
        if loc is not None:
            for key in ("template_id", "target_node", "target_storage", "ip_pool_id",
                        "ip6_pool_id"):
                setattr(there, key, getattr(loc, key))
            there.cluster = cluster
        return there

    located: Product = _kept((ProductLocation, f"{product.id}@{cluster}"), max_age_s, load)
    return located
