"""The OS picker: which templates a product offers. A product's ``templates = [...]`` in the
catalog (rows of ``product_templates``, in the catalog's order) is the whole offer, its own
``template`` among them; a product that lists none offers its own template only. Create and
reinstall to a template outside the offer are refused (workers/intake.py), the API lists the
offer (``GET /v1/services/{id}/templates``, ``GET /v1/products/{name}/templates``)."""

from __future__ import annotations

from typing import Any

from pvekvm.models import Product, ProductTemplate, Template

MAX_TEMPLATES = 64  # per product: an order form's list, not a catalog dump


def catalog_offer_problem(own: Any, offer: Any) -> str | None:
    """What is wrong with a product's ``templates = [...]`` in a catalog file (None: fine): a
    list of 1..MAX_TEMPLATES names, each once, its own ``template`` (the default) among them."""
    if not isinstance(offer, list) or not all(isinstance(n, str) for n in offer):
        return "templates must be a list of template names"
    if len(set(offer)) != len(offer):
        return "templates names a template twice"
    if not 0 < len(offer) <= MAX_TEMPLATES:
        return f"templates: 1..{MAX_TEMPLATES} names, got {len(offer)}"
    if own not in offer:
        return (f"templates must include the product's own template {own!r} (the one a "
                "create without a template installs)")
    return None


def offered(product: Product) -> list[Template]:
    """The templates ``product`` offers, its own first when it lists none."""
    rows = Template.fetch(
        "SELECT t.* FROM product_templates pt JOIN templates t ON t.id = pt.template_id "
        "WHERE pt.product_id = %s ORDER BY pt.position, t.name", product.id)
    if rows:
        return rows
    own = Template.get_or_none(Template.id == product.template_id)
    return [own] if own is not None else []


def offer_problem(product: Product, template: Template) -> str | None:
    """Why ``template`` may not be installed on a service of ``product`` (None: it may)."""
    names = [t.name for t in offered(product)]
    if template.name in names:
        return None
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return (f"template {template.name!r} is not offered by product {product.name!r} "
            f"(offered: {shown})")


def os_family(template: Template) -> str:
    """The OS family the picker groups by: the template name's part before its first '-'
    (``debian-12`` → ``debian``), as ISO names are grouped."""
    return template.name.split("-", 1)[0] if "-" in template.name else template.name


def os_type(template: Template) -> str:
    """``linux`` or ``windows`` (the template's ``os_type`` where the catalog has one)."""
    return str(getattr(template, "os_type", None) or "linux")


def save_offer(product_id: int, template_ids: list[int]) -> None:
    """The catalog's list for a product becomes exactly its offer (in order)."""
    ProductTemplate.delete().where(ProductTemplate.product_id == product_id).execute()
    if template_ids:
        ProductTemplate.insert_many([
            {"product_id": product_id, "template_id": tid, "position": i}
            for i, tid in enumerate(template_ids)]).execute()
