"""The one writer of the ``services`` row: every change of a service's columns is a named change
here, inside the caller's transaction (tests/test_layers.py: nobody else calls
``Service.update``, ``.save`` or ``.create`` on a service, or writes ``UPDATE services``).

Who calls what:
- intake and adoption make the row (:func:`create`, :func:`replace_terminated`, :func:`adopt`);
- workers/operations.py moves its status with the operation's life (:func:`mark_busy` when one
  starts, :func:`complete` when it is done, :func:`give_back` when it is refused or cancelled),
  each from what the machine declares (pvekvm/lifecycle.py);
- steps record what they did to the VM (:func:`place_vm`, :func:`take_vmid`, :func:`forget_vm`,
  :func:`remember_mac`, ...). A change given the step's ``Service`` also updates that object, so
  the steps after it in the same chain read the new value.
"""

from __future__ import annotations

from typing import Any

from peewee import Expression

from pvekvm.lifecycle import ServiceStatus
from pvekvm.models import Service, database


def _write(service: Service | int, where: Expression | None = None, **columns: Any) -> None:
    """Set ``columns`` on the service's row (and on ``service`` when it is the row object, as
    the step that made the change sees it); ``where``: a further condition."""
    sid = service.id if isinstance(service, Service) else service
    cond = Service.id == sid
    Service.update(**columns).where(cond if where is None else cond & where).execute()
    if isinstance(service, Service):
        for name, value in columns.items():
            setattr(service, name, value)


# --- the row's life ---------------------------------------------------------------------------

def create(**columns: Any) -> Service:
    """A new service row (a create event, an adoption)."""
    return Service.create(**columns)


def replace_terminated(service_id: int) -> None:
    """A create re-uses the id of a terminated service: its old row goes first."""
    Service.delete().where((Service.id == service_id)
                           & (Service.status == ServiceStatus.TERMINATED)).execute()


def adopt(service: Service, **columns: Any) -> None:
    """Adoption records the VM it takes over (status, node, MAC, login)."""
    _write(service, **columns)


# --- with the operation's life (workers/operations.py) ---------------------------------------

_MARK_BUSY = "UPDATE services SET status = %s WHERE id = %s"


def mark_busy(service_id: int, status: str) -> None:
    """An operation starts: the service shows its machine's busy status."""
    database.execute_sql(_MARK_BUSY, (status, service_id))


def complete(service_id: int, changes: dict[str, Any]) -> None:
    """An operation is done: the service takes on what it changed (its ``params["service"]``,
    the machine's ``done_status`` and ``suspended_after``)."""
    if changes:
        _write(service_id, **changes)


def give_back(service_id: int, busy: str, status: str) -> None:
    """A refused or cancelled operation frees the service: the ``status`` it had (or its
    machine's ``failed_status``), unless something else has changed it since (``busy``)."""
    _write(service_id, Service.status == busy, status=status)


# --- what steps did to the VM ----------------------------------------------------------------

def change_package(service: Service, product_id: int) -> None:
    """Change package's first step: the service is on the new package from here on."""
    if service.product_id != product_id:
        _write(service, product_id=product_id)


def restored_from_backup(service: Service, columns: dict[str, Any]) -> None:
    """A restore: the service says what the restored VM has (OS, login, password)."""
    if columns:
        _write(service, **columns)


def place_vm(service: Service, node: str) -> None:
    """The VM is on ``node`` (cloned, migrated, or found there)."""
    if service.node != node:
        _write(service, node=node)


def take_vmid(service: Service | int, vmid: int, only_if_none: bool = False) -> None:
    """The service's VM has ``vmid`` (held in ``vmid_allocations`` by the caller);
    ``only_if_none``: unless it already holds one."""
    _write(service, Service.vmid.is_null() if only_if_none else None, vmid=vmid)


def forget_vm(service: Service) -> None:
    """Terminate released the VM: no VMID, no node."""
    _write(service, vmid=None, node=None)


def remember_mac(service: Service, mac: str | None) -> None:
    """net0's MAC as Proxmox gave it (kept across reinstalls)."""
    if mac and service.macaddr != mac:
        _write(service, macaddr=mac)


def set_username(service: Service, user: str) -> None:
    """The login the OS image has."""
    if service.username != user:
        _write(service, username=user)


def store_password(service: Service, password_enc: bytes) -> None:
    """The client's password, encrypted (pvekvm/secrets.py)."""
    _write(service, password_enc=password_enc)


def forget_password(service: Service | int) -> None:
    """Terminate erases the client's password."""
    _write(service, password_enc=None)


def remember_boot_order(service: Service, boot: str | None) -> None:
    """The boot order before an ISO was mounted (restored when it is unmounted)."""
    _write(service, boot_before_iso=boot)


def forget_login(service: Service) -> None:
    """A reinstall from an ISO destroyed the old system: no user or password is kept for it."""
    if service.username is not None or service.password_enc is not None:
        _write(service, username=None, password_enc=None)


def keep_rescue_record(service: Service, saved: str | None) -> None:
    """What rescue mode replaced (CD-ROM slot, its media, the boot order), as JSON; None: the
    service is not in rescue mode."""
    _write(service, rescue_before=saved)


def rename(service: Service, hostname: str) -> None:
    """The client's new host name (``services.live_hostname``'s unique key refuses a name
    another live service holds: IntegrityError, the caller's refusal)."""
    _write(service, hostname=hostname)
