"""What a step sees: the operation, its service, the package it works toward, and Proxmox."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from pvekvm import secrets
from pvekvm.config import Settings
from pvekvm.models import IpAddress, IpPool, Operation, Product, Service, Template
from pvekvm.proxmox import Proxmox
from steps.machine import StepFailed

M = TypeVar("M")


_catalog: dict[tuple[type, int], tuple[float, Any]] = {}


def catalog_row(model: type[M], row_id: int, max_age_s: float) -> M:
    """Products and templates change rarely and are read by every step: keep them per process
    for ``max_age_s`` (a catalog reload reaches every worker within that time)."""
    key = (model, int(row_id))
    hit = _catalog.get(key)
    now = time.monotonic()
    if hit is None or now - hit[0] > max_age_s:
        hit = _catalog[key] = (now, model.get_by_id(row_id))
    return hit[1]


@dataclass
class StepContext:
    settings: Settings
    operation: Operation
    service: Service
    proxmox: Proxmox | None
    after_task: bool = False  # the step's Proxmox task just finished OK

    @property
    def pve(self) -> Proxmox:
        if self.proxmox is None:
            raise StepFailed("no Proxmox connection configured (PVE_CONNECTION_FILE, or "
                             "[proxmox] in the settings file)")
        return self.proxmox

    @cached_property
    def params(self) -> dict[str, Any]:
        return json.loads(self.operation.params or "{}")

    @cached_property
    def product(self) -> Product:
        """The package the operation works toward (the new one during change_package)."""
        return catalog_row(Product, self.params.get("product_id", self.service.product_id),
                           self.settings.engine.catalog_cache_s)

    @cached_property
    def template(self) -> Template:
        return catalog_row(Template, self.params.get("template_id", self.service.template_id),
                           self.settings.engine.catalog_cache_s)

    @property
    def vmid(self) -> int:
        if self.service.vmid is None:
            raise RuntimeError(f"service {self.service.id} has no VMID yet")
        return int(self.service.vmid)

    @property
    def vm_path(self) -> str:
        return f"nodes/{self.service.node}/qemu/{self.vmid}"

    def config(self) -> dict[str, Any]:
        return self.pve.get(f"{self.vm_path}/config")

    @cached_property
    def _addresses(self) -> dict[int, IpAddress]:
        rows = IpAddress.select().where(IpAddress.service_id == self.service.id)
        return {row.version: row for row in rows}

    def address(self, version: int) -> IpAddress | None:
        return self._addresses.get(version)

    def addresses_changed(self) -> None:
        """Forget the cached addresses (after allocating or releasing)."""
        self.__dict__.pop("_addresses", None)

    def pool(self, version: int) -> IpPool | None:
        pool_id = self.product.ip_pool_id if version == 4 else self.product.ip6_pool_id
        return catalog_row(IpPool, pool_id, self.settings.engine.catalog_cache_s) \
            if pool_id else None

    def ips(self) -> tuple[list[str], list[str]]:
        v4, v6 = self.address(4), self.address(6)
        return ([v4.address] if v4 else [], [v6.address] if v6 else [])

    @property
    def password(self) -> str | None:
        if not self.service.password_enc:
            return None
        return secrets.decrypt(self.settings.secret_key_file, self.service.password_enc)

    def set_password(self, password: str) -> None:
        self.service.password_enc = secrets.encrypt(self.settings.secret_key_file, password)
        self.service.save(only=[Service.password_enc])

    def marker(self) -> str:
        """Written into the VM description so a retried clone recognises the VM as ours."""
        return f"pvekvm:service={self.service.id}"
