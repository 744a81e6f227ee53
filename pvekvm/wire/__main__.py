"""``python -m pvekvm.wire``: (re)write the shipped JSON Schemas of every event
(``schemas/events/``) from the models."""

from __future__ import annotations

from pvekvm.wire import schemas

if __name__ == "__main__":
    written = schemas.write()
    for path in written:
        print(f"wrote {path.relative_to(schemas.SHIPPED.parent.parent)}")
    print(f"{len(schemas.generated())} schemas in {schemas.SHIPPED}, {len(written)} changed")
