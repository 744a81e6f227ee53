"""The typed client billing calls to place orders.

    with OrderClient("amqp://guest:guest@127.0.0.1:5672/%2F") as orders:
        event = orders.create(service_id=5546, client_id=17, product="vps-s",
                              email="client@example.com", hostname="web1.example.com")

Each method builds the event (validated by the same rules as intake: a bad value raises
:class:`~producers.events.InvalidEvent` before anything is sent), stamps ``occurred_at`` with the
current UTC time unless given, and publishes it confirmed, persistent and mandatory to
``{namespace}.orders`` with routing key ``order.<type>`` and ``message_id`` = idempotency key.
Without an ``idempotency_key``: ``create``, ``terminate`` and ``backup_schedule`` derive one from
type, service id and fields (the same order published twice carries the same key and runs once);
every other type (``REPEATABLE_TYPES``: suspend, unsuspend, power, snapshots, backups, reset
password, …) gets a fresh key per call, so a second legitimate suspend is not taken for a copy of
the first. To make a retry of one call idempotent, pass billing's own key (e.g. its module-call
id) — the same key with a different order is refused by intake as a conflict.

Not thread-safe: one client per thread. The topology is declared once, on first publish.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from producers.events import (
    BackupCreateEvent,
    BackupDeleteEvent,
    BackupRestoreEvent,
    BackupScheduleEvent,
    ChangePackageEvent,
    CreateEvent,
    Event,
    FirewallRulesSetEvent,
    HostnameChangeEvent,
    IsoMountEvent,
    IsoUnmountEvent,
    LanguageChangeEvent,
    MigrateEvent,
    PowerEvent,
    RdnsResetEvent,
    RdnsSetEvent,
    ReinstallEvent,
    ReinstallIsoEvent,
    RescueOffEvent,
    RescueOnEvent,
    ResetPasswordEvent,
    SnapshotCreateEvent,
    SnapshotDeleteEvent,
    SnapshotRollbackEvent,
    SuspendEvent,
    TerminateEvent,
    UnsuspendEvent,
    producer_key,
    type_of,
)
from pvekvm.messaging import Publisher, Topology, declare_if_allowed


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class OrderClient:
    def __init__(self, amqp_url: str, namespace: str = "pvekvm") -> None:
        self.amqp_url = amqp_url
        self.topology = Topology(namespace)
        self._publisher: Publisher | None = None

    # ------------------------------------------------------------------ plumbing
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def publish(self, event: Event) -> Event:
        """Publish an already built event (confirmed; raises on nack/unroutable/broker down)."""
        self.publish_raw(event.to_json(), event.routing_key, event.idempotency_key)
        return event

    def publish_raw(self, body: bytes, routing_key: str, message_id: str | None = None) -> None:
        """Publish ``body`` as-is, without validation (operators replaying messages)."""
        if self._publisher is None:
            declare_if_allowed(self.amqp_url, self.topology)
            self._publisher = Publisher(self.amqp_url, self.topology, app_id="pvekvm-producer")
        self._publisher.publish_order(body, routing_key, message_id=message_id)

    def _emit(self, cls: type[Event], service_id: int, idempotency_key: str | None,
              occurred_at: str | None, **fields: Any) -> Any:
        key = producer_key(type_of(cls), service_id, idempotency_key)
        if key is not None:
            fields["idempotency_key"] = key  # else the event derives one
        event = cls(service_id=service_id, occurred_at=occurred_at or utc_now(), **fields)
        return self.publish(event)

    # ------------------------------------------------------------------ one method per type
    def create(self, *, service_id: int, client_id: int, product: str, email: str,
               hostname: str | None = None, template: str | None = None, ipv6: bool = False,
               language: str | None = None, ssh_keys: list[str] | None = None,
               idempotency_key: str | None = None,
               occurred_at: str | None = None, location: str | None = None) -> CreateEvent:
        """``language``: the client's (``de``, ``pt-BR``, ``german``); mails fall back to
        English when no template exists for it. ``ssh_keys``: the client's OpenSSH public key
        lines. ``location``: the cluster the VM goes to (needed when the product is offered in
        several)."""
        return self._emit(CreateEvent, service_id, idempotency_key, occurred_at,
                          client_id=client_id, product=product, email=email, hostname=hostname,
                          template=template, ipv6=ipv6, language=language, ssh_keys=ssh_keys,
                          location=location)

    def change_package(self, *, service_id: int, product: str,
                       idempotency_key: str | None = None, occurred_at: str | None = None,
                       ) -> ChangePackageEvent:
        return self._emit(ChangePackageEvent, service_id, idempotency_key, occurred_at,
                          product=product)

    def reinstall(self, *, service_id: int, template: str | None = None,
                  ssh_keys: list[str] | None = None,
                  idempotency_key: str | None = None, occurred_at: str | None = None,
                  ) -> ReinstallEvent:
        """``ssh_keys``: None keeps the service's keys, ``[]`` removes them."""
        return self._emit(ReinstallEvent, service_id, idempotency_key, occurred_at,
                          template=template, ssh_keys=ssh_keys)

    def suspend(self, *, service_id: int, idempotency_key: str | None = None,
                occurred_at: str | None = None) -> SuspendEvent:
        return self._emit(SuspendEvent, service_id, idempotency_key, occurred_at)

    def unsuspend(self, *, service_id: int, idempotency_key: str | None = None,
                  occurred_at: str | None = None) -> UnsuspendEvent:
        return self._emit(UnsuspendEvent, service_id, idempotency_key, occurred_at)

    def terminate(self, *, service_id: int, idempotency_key: str | None = None,
                  occurred_at: str | None = None) -> TerminateEvent:
        return self._emit(TerminateEvent, service_id, idempotency_key, occurred_at)

    def snapshot_create(self, *, service_id: int, name: str, description: str | None = None,
                        idempotency_key: str | None = None, occurred_at: str | None = None,
                        ) -> SnapshotCreateEvent:
        return self._emit(SnapshotCreateEvent, service_id, idempotency_key, occurred_at,
                          name=name, description=description)

    def snapshot_delete(self, *, service_id: int, name: str, description: str | None = None,
                        idempotency_key: str | None = None, occurred_at: str | None = None,
                        ) -> SnapshotDeleteEvent:
        return self._emit(SnapshotDeleteEvent, service_id, idempotency_key, occurred_at,
                          name=name, description=description)

    def snapshot_rollback(self, *, service_id: int, name: str, description: str | None = None,
                          idempotency_key: str | None = None, occurred_at: str | None = None,
                          ) -> SnapshotRollbackEvent:
        return self._emit(SnapshotRollbackEvent, service_id, idempotency_key, occurred_at,
                          name=name, description=description)

    def backup_create(self, *, service_id: int, note: str | None = None,
                      idempotency_key: str | None = None, occurred_at: str | None = None,
                      ) -> BackupCreateEvent:
        return self._emit(BackupCreateEvent, service_id, idempotency_key, occurred_at,
                          note=note)

    def backup_delete(self, *, service_id: int, backup_id: int,
                      idempotency_key: str | None = None, occurred_at: str | None = None,
                      ) -> BackupDeleteEvent:
        return self._emit(BackupDeleteEvent, service_id, idempotency_key, occurred_at,
                          backup_id=backup_id)

    def backup_restore(self, *, service_id: int, backup_id: int,
                       idempotency_key: str | None = None, occurred_at: str | None = None,
                       ) -> BackupRestoreEvent:
        return self._emit(BackupRestoreEvent, service_id, idempotency_key, occurred_at,
                          backup_id=backup_id)

    def backup_schedule(self, *, service_id: int, days: Iterable[str],
                        idempotency_key: str | None = None, occurred_at: str | None = None,
                        ) -> BackupScheduleEvent:
        days = days if isinstance(days, str | list | tuple) else list(days)
        return self._emit(BackupScheduleEvent, service_id, idempotency_key, occurred_at,
                          days=days)

    def reset_password(self, *, service_id: int, ssh_keys: list[str] | None = None,
                       idempotency_key: str | None = None,
                       occurred_at: str | None = None) -> ResetPasswordEvent:
        """``ssh_keys``: new keys as well (None keeps the service's, ``[]`` removes them)."""
        return self._emit(ResetPasswordEvent, service_id, idempotency_key, occurred_at,
                          ssh_keys=ssh_keys)

    def iso_mount(self, *, service_id: int, iso: str, idempotency_key: str | None = None,
                  occurred_at: str | None = None) -> IsoMountEvent:
        return self._emit(IsoMountEvent, service_id, idempotency_key, occurred_at, iso=iso)

    def iso_unmount(self, *, service_id: int, idempotency_key: str | None = None,
                    occurred_at: str | None = None) -> IsoUnmountEvent:
        return self._emit(IsoUnmountEvent, service_id, idempotency_key, occurred_at)

    def rdns_set(self, *, service_id: int, address: str, hostname: str,
                 idempotency_key: str | None = None, occurred_at: str | None = None,
                 ) -> RdnsSetEvent:
        return self._emit(RdnsSetEvent, service_id, idempotency_key, occurred_at,
                          address=address, hostname=hostname)

    def rdns_reset(self, *, service_id: int, address: str, idempotency_key: str | None = None,
                   occurred_at: str | None = None) -> RdnsResetEvent:
        return self._emit(RdnsResetEvent, service_id, idempotency_key, occurred_at,
                          address=address)

    def firewall_rules_set(self, *, service_id: int, rules: Iterable[dict[str, Any]],
                           idempotency_key: str | None = None, occurred_at: str | None = None,
                           ) -> FirewallRulesSetEvent:
        """The client's own firewall rules, replacing its previous set (pvekvm/clientfw.py)."""
        return self._emit(FirewallRulesSetEvent, service_id, idempotency_key, occurred_at,
                          rules=list(rules))

    def hostname_change(self, *, service_id: int, hostname: str,
                        idempotency_key: str | None = None, occurred_at: str | None = None,
                        ) -> HostnameChangeEvent:
        return self._emit(HostnameChangeEvent, service_id, idempotency_key, occurred_at,
                          hostname=hostname)

    def power(self, *, service_id: int, action: str, idempotency_key: str | None = None,
              occurred_at: str | None = None) -> PowerEvent:
        return self._emit(PowerEvent, service_id, idempotency_key, occurred_at, action=action)

    def migrate(self, *, service_id: int, node: str | None = None,
                idempotency_key: str | None = None, occurred_at: str | None = None,
                ) -> MigrateEvent:
        """An admin's: move the VM to ``node``, or where placement chooses."""
        return self._emit(MigrateEvent, service_id, idempotency_key, occurred_at, node=node)

    def language_change(self, *, service_id: int, language: str,
                        idempotency_key: str | None = None, occurred_at: str | None = None,
                        ) -> LanguageChangeEvent:
        """The client's mail language from now on (``de``, ``pt-BR``, ``german``)."""
        return self._emit(LanguageChangeEvent, service_id, idempotency_key, occurred_at,
                          language=language)

    def reinstall_iso(self, *, service_id: int, iso: str, idempotency_key: str | None = None,
                      occurred_at: str | None = None) -> ReinstallIsoEvent:
        """Empty disks, the installer ``iso`` in the CD-ROM (network and firewall kept)."""
        return self._emit(ReinstallIsoEvent, service_id, idempotency_key, occurred_at, iso=iso)

    def rescue_on(self, *, service_id: int, idempotency_key: str | None = None,
                  occurred_at: str | None = None) -> RescueOnEvent:
        return self._emit(RescueOnEvent, service_id, idempotency_key, occurred_at)

    def rescue_off(self, *, service_id: int, idempotency_key: str | None = None,
                   occurred_at: str | None = None) -> RescueOffEvent:
        return self._emit(RescueOffEvent, service_id, idempotency_key, occurred_at)


__all__ = ["OrderClient", "utc_now"]
