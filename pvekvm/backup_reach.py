"""Which backups a client can restore: an archive is reached through one node.

A backup row's ``node`` is the node whose API reaches its archive: shared storage follows the
VM when it migrates (steps/migrate.follow_backups), an archive on a node's local storage stays
on that node. PVE restores (``POST /nodes/{node}/qemu`` with ``archive=``) on the node that
holds the VM's config (pmxcfs refuses the VMID's config on another node: "File exists"), and
that node cannot open another node's local archive ("can't find file"). So a backup whose node
is not the VM's cannot be restored: refused with this reason, and never offered (the API's
``restorable``, the failed restore's way out). Deleting it goes through its own node's API.
"""

from __future__ import annotations


def unreachable(backup_node: str, storage: str, vm_node: str | None) -> str | None:
    """Why the archive cannot be restored onto the VM where it is now, or None."""
    if vm_node is None or backup_node == vm_node:
        return None
    return (f"the archive is on {backup_node}'s local storage {storage} and the VM is now on "
            f"{vm_node}: PVE cannot restore it there (migrate the service back to "
            f"{backup_node} to restore it, or restore another backup)")
