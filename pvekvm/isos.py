"""ISO images as the manual groups them (the API and the CLI list them so)."""

from __future__ import annotations


def iso_group(filename: str) -> str:
    """The manual's grouping: the part before the first '-'; no dash → OTHER."""
    return filename.split("-", 1)[0] if "-" in filename else "OTHER"
