"""What a step sees: the operation, its service, the package it works toward, and Proxmox."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pvekvm import addresses, secrets, service_changes
from pvekvm.catalog_cache import at_location, catalog_row
from pvekvm.config import Settings
from pvekvm.models import (
    IpAddress,
    IpPool,
    Operation,
    Product,
    Service,
    Template,
)
from pvekvm.proxmox import Proxmox
from steps.machine import StepFailed


@dataclass
class StepContext:
    settings: Settings
    operation: Operation
    service: Service
    proxmox: Proxmox | None
    after_task: bool = False  # the step's Proxmox task just finished OK

    @property
    def pve(self) -> Proxmox:
        """The client of the service's cluster (the engine builds it per cluster)."""
        if self.proxmox is None:
            cluster = self.service.cluster
            if self.settings.proxmox is not None and self.settings.cluster(cluster) is None:
                raise StepFailed(f"service {self.service.id} is in cluster {cluster!r}, which "
                                 "the settings do not name ([[clusters]])")
            raise StepFailed("no Proxmox connection configured (PVE_CONNECTION_FILE, or "
                             "[proxmox] in the settings file)")
        return self.proxmox

    @cached_property
    def params(self) -> dict[str, Any]:
        return json.loads(self.operation.params or "{}")

    @cached_property
    def product(self) -> Product:
        """The package the operation works toward (the new one during change_package), as
        offered in the service's cluster: a location other than the product's home one
        deploys from its own template, node, storage and pools (product_locations)."""
        max_age = self.settings.engine.catalog_cache_s
        row = catalog_row(Product, self.params.get("product_id", self.service.product_id),
                          max_age)
        return at_location(row, self.service.cluster, max_age)

    @cached_property
    def template(self) -> Template:
        return catalog_row(Template, self.params.get("template_id", self.service.template_id),
                           self.settings.engine.catalog_cache_s)

    @property
    def ssh_keys(self) -> str | None:
        """The client's keys the VM gets: those the order brings (an operation's ``service``
        columns, set on the service when it completes) or the service's own."""
        columns = self.params.get("service", {})
        return columns.get("ssh_keys", self.service.ssh_keys)

    @property
    def password_login(self) -> bool:
        """Whether the client logs in with the password: off for a package without SSH
        password login on a Linux template (a Windows one logs in with its password)."""
        return bool(self.product.ssh_pwauth) or self.template.os_type == "windows"

    @property
    def vmid(self) -> int:
        if self.service.vmid is None:
            raise RuntimeError(f"service {self.service.id} has no VMID yet")
        return int(self.service.vmid)

    @property
    def node(self) -> str:
        """The node the service's VM lives on (a step before the clone has none)."""
        if self.service.node is None:
            raise StepFailed(f"service {self.service.id} has no node yet")
        return str(self.service.node)

    @property
    def vm_path(self) -> str:
        return f"nodes/{self.service.node}/qemu/{self.vmid}"

    def config(self) -> dict[str, Any]:
        return self.pve.get(f"{self.vm_path}/config")

    @cached_property
    def _addresses(self) -> dict[tuple[int, int], IpAddress]:
        return {(row.version, row.slot): row for row in addresses.held(self.service.id)}

    def address(self, version: int, slot: int = 0) -> IpAddress | None:
        """The held row of ``version`` in ``slot`` (0: the primary address or prefix)."""
        return self._addresses.get((version, slot))

    def extra_ipv4(self) -> list[IpAddress]:
        """The additional IPv4 rows, by slot (slot N is on NIC netN)."""
        return [row for (version, slot), row in sorted(self._addresses.items())
                if version == 4 and slot > 0]

    def firewall_cidrs(self) -> set[str]:
        """Every address and routed prefix the VM may send from (its anti-spoofing IPSet)."""
        return {addresses.cidr(row) for row in self._addresses.values()}

    def addresses_changed(self) -> None:
        """Forget the cached addresses (after allocating or releasing)."""
        self.__dict__.pop("_addresses", None)

    def pool(self, version: int) -> IpPool | None:
        pool_id = self.product.ip_pool_id if version == 4 else self.product.ip6_pool_id
        return catalog_row(IpPool, pool_id, self.settings.engine.catalog_cache_s) \
            if pool_id else None

    def ips(self) -> tuple[list[str], list[str]]:
        """The primary IPv4 and IPv6 (a prefix's host address) the VM is reached at."""
        v4, v6 = self.address(4), self.address(6)
        return ([v4.address] if v4 else [], [addresses.host_address(v6)] if v6 else [])

    @property
    def password(self) -> str | None:
        if not self.service.password_enc:
            return None
        return secrets.decrypt(self.settings.secret_key_file, self.service.password_enc)

    def set_password(self, password: str) -> None:
        service_changes.store_password(
            self.service, secrets.encrypt(self.settings.secret_key_file, password))

    def marker(self) -> str:
        """Written into the VM description so a retried clone recognises the VM as ours."""
        return marker(self.service.id)


def marker(service_id: int) -> str:
    """pvekvm's mark in a VM's description: the VM is service ``service_id``'s (a clone writes
    it, adoption adds it)."""
    return f"pvekvm:service={service_id}"
