"""peewee models mirroring schema.sql (the schema is the truth; tests/test_schema.py checks both
agree). The database handle is a proxy bound once per process by :func:`pvekvm.db.bind`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from peewee import (
    AutoField,
    BigAutoField,
    BigIntegerField,
    BlobField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateField,
    DateTimeField,
    DecimalField,
    IntegerField,
    Model,
    SmallIntegerField,
    TextField,
)

from pvekvm.lifecycle import OpStatus, ServiceStatus

database = DatabaseProxy()


# (model, column names of a statement) -> for each column: its field's name and converter, or
# its own name and None for a column that is no field (a plain attribute, as Model.raw makes it)
_SHAPES: dict[tuple[type[Model], tuple[str, ...]],
              tuple[tuple[str, Callable[[Any], Any] | None], ...]] = {}


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False

    @classmethod
    def fetch(cls, sql: str, *args: object) -> list[Self]:
        """The rows of a written-out SELECT as instances, as ``Model.raw`` makes them (a
        field's column holds the field's Python value, another column is a plain attribute),
        the columns matched to fields once per statement shape rather than per query (the
        hot path's reads: peewee's per-query matching cost a third of the read)."""
        cursor = database.execute_sql(sql, args)
        key = (cls, tuple(d[0] for d in cursor.description))
        shape = _SHAPES.get(key)
        if shape is None:
            fields = cls._meta.columns
            shape = _SHAPES[key] = tuple(
                (fields[name].name, fields[name].python_value) if name in fields else (name, None)
                for name in key[1])
        found = []
        for row in cursor.fetchall():
            obj = cls(__no_default__=1)
            data = obj.__data__
            for (name, convert), value in zip(shape, row, strict=True):
                if convert is None:
                    setattr(obj, name, value)
                else:
                    data[name] = value if value is None else convert(value)
            found.append(obj)
        return found

    @classmethod
    def fetch_one(cls, sql: str, *args: object) -> Self | None:
        """The first row of :meth:`fetch` (None when there is none)."""
        rows = cls.fetch(sql, *args)
        return rows[0] if rows else None


class Template(BaseModel):
    id = AutoField()
    name = CharField(max_length=64, unique=True)
    vmid = IntegerField()
    node = CharField(max_length=64)
    os_user = CharField(max_length=32, default="root")
    os_type = CharField(max_length=8, default="linux")  # windows: cloudbase-init
    ostype = CharField(max_length=8, null=True)  # PVE ostype (l26, win11); None: the template's
    cluster = CharField(max_length=64, default="default")

    class Meta:
        table_name = "templates"


class TemplateReplica(BaseModel):
    template_id = IntegerField()
    node = CharField(max_length=64)
    vmid = IntegerField()
    storage = CharField(max_length=64)
    shared = BooleanField(default=False)

    class Meta:
        table_name = "template_replicas"
        indexes = ((("template_id", "node"), True),)


class IpPool(BaseModel):
    id = AutoField()
    name = CharField(max_length=64, unique=True)
    version = SmallIntegerField()
    network = CharField(max_length=64)
    gateway = CharField(max_length=45)
    nameservers = CharField(max_length=255, default="")
    assign = SmallIntegerField(null=True)  # prefix pool: one /assign per service; None = addresses
    cluster = CharField(max_length=64, null=True)  # None: serves every cluster

    class Meta:
        table_name = "ip_pools"


class Product(BaseModel):
    id = AutoField()
    name = CharField(max_length=64, unique=True)
    cores = SmallIntegerField()
    sockets = SmallIntegerField(default=1)
    memory_mb = IntegerField()
    cpu_type = CharField(max_length=64, null=True)  # PVE's cpu (cputype); None: PVE's default
    cpulimit = DecimalField(max_digits=5, decimal_places=2, null=True)  # None/0: no limit
    cpuunits = IntegerField(null=True)  # CPU weight; None: PVE's default
    balloon_mb = IntegerField(null=True)  # balloon minimum; 0: no balloon device; None: unset
    disk_gb = IntegerField()
    disk_bus = CharField(max_length=8, default="scsi")
    disk_mbps_rd = IntegerField(default=0)
    disk_mbps_wr = IntegerField(default=0)
    disk_iops_rd = IntegerField(default=0)
    disk_iops_wr = IntegerField(default=0)
    disk_mbps_rd_max = IntegerField(default=0)  # burst pools (PVE's *_max); 0: none
    disk_mbps_wr_max = IntegerField(default=0)
    disk_iops_rd_max = IntegerField(default=0)
    disk_iops_wr_max = IntegerField(default=0)
    add_disk_gb = IntegerField(default=0)
    add_disk_storage = CharField(max_length=64, null=True)
    add_disk_mbps_rd = IntegerField(default=0)
    add_disk_mbps_wr = IntegerField(default=0)
    add_disk_iops_rd = IntegerField(default=0)
    add_disk_iops_wr = IntegerField(default=0)
    add_disk_mbps_rd_max = IntegerField(default=0)
    add_disk_mbps_wr_max = IntegerField(default=0)
    add_disk_iops_rd_max = IntegerField(default=0)
    add_disk_iops_wr_max = IntegerField(default=0)
    net_rate_mbps = DecimalField(max_digits=8, decimal_places=2, default=0)
    bridge = CharField(max_length=32, default="vmbr0")
    vlan = SmallIntegerField(null=True)
    template_id = IntegerField()
    target_node = CharField(max_length=64)
    target_storage = CharField(max_length=64)
    nodes = CharField(max_length=1024, null=True)  # comma-separated; None = target_node alone
    node_group = CharField(max_length=64, null=True)
    dhcp = BooleanField(default=False)
    ip_pool_id = IntegerField(null=True)
    ip6_pool_id = IntegerField(null=True)
    extra_ipv4 = SmallIntegerField(default=0)  # additional IPv4 from ip_pool, on net1..netN
    snapshot_limit = SmallIntegerField(default=0)
    snapshot_days = SmallIntegerField(default=1)
    backup_limit = SmallIntegerField(default=0)
    backup_storage = CharField(max_length=64, null=True)
    iso_storage = CharField(max_length=64, null=True)
    firewall_enabled = BooleanField(default=True)
    firewall_policy_in = CharField(max_length=8, default="ACCEPT")
    firewall_policy_out = CharField(max_length=8, default="ACCEPT")
    client_fw_rules = SmallIntegerField(default=20)  # the client's own rules at most; 0: none
    hostname_prefix = CharField(max_length=32, default="vps")
    dns_zone = CharField(max_length=253, null=True)
    linked_clone = BooleanField(default=False)
    traffic_quota_gb = IntegerField(null=True)  # per UTC month, in + out, GB = 10^9 bytes
    overage_rate_mbps = DecimalField(max_digits=8, decimal_places=2, null=True)
    rdns_policy = CharField(max_length=16, default="owned-or-fcrdns")  # pvekvm/rdns_policy.py
    ssh_pwauth = BooleanField(default=True)  # False: keys only, the ready mail has no password
    cicustom = CharField(max_length=255, null=True)  # PVE cicustom (the operator's snippets)
    cluster = CharField(max_length=64, default="default")  # its home location

    class Meta:
        table_name = "products"


class ProductTemplate(BaseModel):
    """A template a product offers (pvekvm/picker.py); none listed: its own only."""

    product_id = IntegerField()
    template_id = IntegerField()
    position = SmallIntegerField(default=0)

    class Meta:
        table_name = "product_templates"
        primary_key = CompositeKey("product_id", "template_id")


class Service(BaseModel):
    id = IntegerField(primary_key=True)
    client_id = IntegerField(index=True)
    product_id = IntegerField()
    template_id = IntegerField()
    email = CharField(max_length=254)
    hostname = CharField(max_length=253)
    status = CharField(max_length=16, default=ServiceStatus.PENDING)
    vmid = IntegerField(null=True, unique=True)
    node = CharField(max_length=64, null=True)
    cluster = CharField(max_length=64, default="default")
    macaddr = CharField(max_length=17, null=True)
    username = CharField(max_length=32, null=True)
    password_enc = BlobField(null=True)
    want_ipv6 = BooleanField(default=False)
    suspended = BooleanField(default=False)
    boot_before_iso = CharField(max_length=255, null=True)
    rescue_before = CharField(max_length=512, null=True)  # steps/rescue.py; None = not in rescue
    language = CharField(max_length=35, null=True)
    throttled_period = DateField(null=True)  # the month (its first day) it is throttled for
    ssh_keys = TextField(null=True)  # OpenSSH public key lines (pvekvm/sshkeys.py)
    created_at = DateTimeField(null=True)
    updated_at = DateTimeField(null=True)
    # live_hostname: a generated column (unique while live) the database alone maintains.

    class Meta:
        table_name = "services"

    @classmethod
    def row(cls, service_id: int) -> Service:
        """The service's row, or ``Service.DoesNotExist`` as from ``get_by_id`` (the statement
        written out: steps and operation ends read it, and peewee building it cost more CPU
        than MariaDB running it)."""
        found = cls.fetch_one("SELECT * FROM services WHERE id = %s", service_id)
        if found is None:
            raise cls.DoesNotExist(f"service {service_id}")  # type: ignore[attr-defined]
        return found


class VmidAllocation(BaseModel):
    """A VMID given out; rows are never deleted, so no VMID is given twice."""

    vmid = IntegerField(primary_key=True)
    service_id = IntegerField(index=True)
    allocated_at = DateTimeField(null=True)

    class Meta:
        table_name = "vmid_allocations"


class IpAddress(BaseModel):
    id = AutoField()
    pool_id = IntegerField()
    address = CharField(max_length=45, unique=True)
    version = SmallIntegerField()
    service_id = IntegerField(null=True)
    released_at = DateTimeField(null=True)
    ptr = CharField(max_length=253, null=True)  # client reverse DNS; None = the service hostname
    slot = SmallIntegerField(default=0)  # 0 = primary; N = extra IPv4 N (on netN)
    prefixlen = SmallIntegerField(null=True)  # a routed prefix address/prefixlen; None = address

    class Meta:
        table_name = "ip_addresses"


class Operation(BaseModel):
    id = BigAutoField()
    service_id = IntegerField(index=True)
    kind = CharField(max_length=32)
    idempotency_key = CharField(max_length=128, unique=True)
    request_hash = CharField(max_length=64, null=True)
    params = TextField()
    state = CharField(max_length=48)
    status = CharField(max_length=16, default=OpStatus.RUNNING)
    prior_status = CharField(max_length=16, null=True)
    active_service = IntegerField(null=True, unique=True)
    version = IntegerField(default=0)
    nudge_id = CharField(max_length=36, null=True)
    prev_nudge_id = CharField(max_length=36, null=True)
    nudge_published = BooleanField(default=False)
    nudge_delay_s = DecimalField(max_digits=8, decimal_places=3, default=0)
    attempt = SmallIntegerField(default=0)
    error = TextField(null=True)
    upid = CharField(max_length=255, null=True)
    upid_node = CharField(max_length=64, null=True)
    polls = SmallIntegerField(default=0)
    step_started_at = DateTimeField(null=True)
    paused_at = DateTimeField(null=True)
    paused_since = DateTimeField(null=True)
    auto_resumes = SmallIntegerField(default=0)
    auto_resume_at = DateTimeField(null=True)
    pause_dependency = CharField(max_length=16, null=True)
    created_at = DateTimeField(null=True)
    updated_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "operations"


class OutboxEvent(BaseModel):
    """An event for billing, written in the commit of the change it reports."""

    id = BigAutoField()
    event_id = CharField(max_length=36, unique=True)
    type = CharField(max_length=48)
    service_id = IntegerField(null=True)
    operation_id = BigIntegerField(null=True)
    body = TextField()
    created_at = DateTimeField(null=True)
    published_at = DateTimeField(null=True)
    seq = BigIntegerField(null=True, unique=True)  # feed position (workers/webhooks.py)

    class Meta:
        table_name = "outbox"


class TrafficUsage(BaseModel):
    """Bytes a service's VM moved in one UTC hour (workers/traffic.py adds each RRD row once)."""

    id = BigAutoField()
    service_id = IntegerField()
    period_start = DateTimeField()
    bytes_in = DecimalField(max_digits=24, decimal_places=3, default=0)
    bytes_out = DecimalField(max_digits=24, decimal_places=3, default=0)

    class Meta:
        table_name = "traffic_usage"
        indexes = ((("service_id", "period_start"), True),)


class TrafficCursor(BaseModel):
    """How far a service's RRD series is counted: rows with time < ``counted_to`` are in."""

    service_id = IntegerField(primary_key=True)
    vmid = IntegerField()
    counted_from = BigIntegerField()
    counted_to = BigIntegerField()
    missed_s = BigIntegerField(default=0)
    updated_at = DateTimeField(null=True)

    class Meta:
        table_name = "traffic_cursors"


class HeldEvent(BaseModel):
    """An event that arrived before its service's ``create``: kept until then, or refused."""

    id = BigAutoField()
    service_id = IntegerField(index=True)
    idempotency_key = CharField(max_length=128, unique=True)
    body = BlobField()
    received_at = DateTimeField(null=True)
    expires_at = DateTimeField()

    class Meta:
        table_name = "held_events"


class StepRun(BaseModel):
    id = BigAutoField()
    operation_id = BigIntegerField()
    service_id = IntegerField()
    vmid = IntegerField(null=True)
    label = CharField(max_length=64)
    from_state = CharField(max_length=48)
    to_state = CharField(max_length=48)
    result = CharField(max_length=8)
    duration_ms = IntegerField()
    message = TextField(null=True)
    worker = CharField(max_length=64, default="")
    created_at = DateTimeField(null=True)

    class Meta:
        table_name = "step_runs"


class Snapshot(BaseModel):
    id = AutoField()
    service_id = IntegerField()
    name = CharField(max_length=40)
    description = CharField(max_length=255, default="")
    created_at = DateTimeField(null=True)
    expires_at = DateTimeField()

    class Meta:
        table_name = "snapshots"


class Backup(BaseModel):
    id = AutoField()
    service_id = IntegerField()
    volid = CharField(max_length=255, unique=True)
    storage = CharField(max_length=64)
    node = CharField(max_length=64)
    size_bytes = BigIntegerField(default=0)
    scheduled = BooleanField(default=False)
    note = CharField(max_length=255, default="")
    operation_id = BigIntegerField(null=True)  # the backup_create that made it
    template_id = IntegerField(null=True)
    username = CharField(max_length=32, null=True)
    password_enc = BlobField(null=True)
    created_at = DateTimeField(null=True)

    class Meta:
        table_name = "backups"


class BackupSchedule(BaseModel):
    service_id = IntegerField(primary_key=True)
    days = CharField(max_length=32)
    minute_of_day = SmallIntegerField()
    updated_at = DateTimeField(null=True)

    class Meta:
        table_name = "backup_schedules"


class DnsProvider(BaseModel):
    id = AutoField()
    name = CharField(max_length=64, unique=True)
    kind = CharField(max_length=16)
    settings_enc = BlobField()

    class Meta:
        table_name = "dns_providers"


class DnsZone(BaseModel):
    id = AutoField()
    name = CharField(max_length=253, unique=True)
    provider_id = IntegerField()

    class Meta:
        table_name = "dns_zones"


class ClientFirewallRules(BaseModel):
    """The client's own firewall rules for its VM (pvekvm/clientfw.py), as the last
    firewall_rules_set saved them; steps/firewall.py owns the writes."""

    service_id = IntegerField(primary_key=True)
    rules = TextField()  # JSON array of parsed rules, in PVE order
    operation_id = BigIntegerField(null=True)
    updated_at = DateTimeField(null=True)

    class Meta:
        table_name = "client_firewall_rules"


class DnsRecordRow(BaseModel):
    id = AutoField()
    service_id = IntegerField()
    zone = CharField(max_length=253)
    name = CharField(max_length=253)
    type = CharField(max_length=8)
    content = CharField(max_length=255)
    synced = BooleanField(default=False)
    held_by = IntegerField(null=True)
    error = TextField(null=True)
    updated_at = DateTimeField(null=True)

    class Meta:
        table_name = "dns_records"


class Email(BaseModel):
    id = BigAutoField()
    operation_id = BigIntegerField()
    template = CharField(max_length=32)
    recipient = CharField(max_length=254)
    sent_at = DateTimeField(null=True)

    class Meta:
        table_name = "emails"


class DeadLetter(BaseModel):
    id = BigAutoField()
    source = CharField(max_length=128)
    reason = TextField()
    body = BlobField()
    created_at = DateTimeField(null=True)

    class Meta:
        table_name = "dead_letters"


class AuditLog(BaseModel):
    id = BigAutoField()
    service_id = IntegerField(null=True)
    operation_id = BigIntegerField(null=True)
    event = CharField(max_length=64)
    detail = TextField()
    created_at = DateTimeField(null=True)

    class Meta:
        table_name = "audit_log"


class ClientToken(BaseModel):
    """A client token of one life of one service (written by pvekvm.tokens only); the secret
    itself is stored nowhere, only its SHA-256."""

    id = CharField(max_length=16, primary_key=True)
    service_id = IntegerField()
    client_id = IntegerField()
    service_created_at = DateTimeField()
    secret_sha256 = BlobField()
    created_by = CharField(max_length=64)
    created_at = DateTimeField(null=True)
    expires_at = DateTimeField()
    revoked_at = DateTimeField(null=True)
    revoked_why = CharField(max_length=64, null=True)

    class Meta:
        table_name = "client_tokens"


class SchemaVersion(BaseModel):
    """One row per schema version applied (see pvekvm.db.apply_schema)."""

    version = IntegerField(primary_key=True)
    name = CharField(max_length=128)
    applied_at = DateTimeField(null=True)

    class Meta:
        table_name = "schema_version"


class TaskSlot(BaseModel):
    """A place where PVE runs a bounded number of tasks of a kind (steps/slots.py)."""

    slot = CharField(max_length=200, primary_key=True)

    class Meta:
        table_name = "task_slots"


class TaskClaim(BaseModel):
    operation_id = BigIntegerField(primary_key=True)
    slot = CharField(max_length=200)

    class Meta:
        table_name = "task_claims"


class FeedSequencer(BaseModel):
    """One row: the lock the webhook deliverers' sequencer takes (workers/webhooks.py)."""

    id = IntegerField(primary_key=True)
    updated_at = DateTimeField(null=True)

    class Meta:
        table_name = "feed_sequencer"


class WebhookEndpoint(BaseModel):
    """Where billing events are POSTed (pvekvm/webhooks/store.py writes these rows)."""

    id = BigAutoField()
    name = CharField(max_length=64)
    origin = CharField(max_length=8)
    owner = CharField(max_length=64, null=True)
    scope = CharField(max_length=64, null=True)
    url = CharField(max_length=2048)
    event_types = CharField(max_length=2000)
    secrets_enc = TextField()
    fanned_seq = BigIntegerField(null=True)
    live_key = CharField(max_length=140, null=True, unique=True)
    created_at = DateTimeField(null=True)
    deleted_at = DateTimeField(null=True)

    class Meta:
        table_name = "webhook_endpoints"


class WebhookDelivery(BaseModel):
    id = BigAutoField()
    endpoint_id = BigIntegerField()
    seq = BigIntegerField()
    service_id = IntegerField(null=True)
    status = CharField(max_length=10, null=True)
    attempts = IntegerField(null=True)
    last_status = IntegerField(null=True)
    last_error = CharField(max_length=1000, null=True)
    created_at = DateTimeField(null=True)
    delivered_at = DateTimeField(null=True)

    class Meta:
        table_name = "webhook_deliveries"


class WebhookStream(BaseModel):
    """(endpoint, service): the event being sent, its retries, lease and parking."""

    endpoint_id = BigIntegerField()
    service_id = IntegerField()
    head_seq = BigIntegerField(null=True)
    attempts = IntegerField(null=True)
    next_attempt_at = DateTimeField(null=True)
    first_failed_at = DateTimeField(null=True)
    lease_owner = CharField(max_length=64, null=True)
    lease_until = DateTimeField(null=True)
    parked_reason = CharField(max_length=1000, null=True)

    class Meta:
        table_name = "webhook_streams"
        primary_key = CompositeKey("endpoint_id", "service_id")


class ConsoleSession(BaseModel):
    """A console token and the one proxy session it may open (written by
    pvekvm.console.sessions only); only the secret's SHA-256 is kept."""

    id = CharField(max_length=16, primary_key=True)
    service_id = IntegerField()
    client_id = IntegerField()
    service_created_at = DateTimeField()
    secret_sha256 = BlobField()
    client_token_id = CharField(max_length=16, null=True)
    bound_address = CharField(max_length=45, null=True)
    created_by = CharField(max_length=64)
    created_at = DateTimeField(null=True)
    connect_by = DateTimeField()
    used_at = DateTimeField(null=True)
    peer = CharField(max_length=45, null=True)
    proxy = CharField(max_length=96, null=True)
    seen_at = DateTimeField(null=True)
    ended_at = DateTimeField(null=True)
    end_reason = CharField(max_length=96, null=True)
    bytes_up = BigIntegerField(default=0)
    bytes_down = BigIntegerField(default=0)

    class Meta:
        table_name = "console_sessions"


class Node(BaseModel):
    """A node in maintenance or being drained (pvekvm/nodes.py); a node without a row is in
    service."""

    cluster = CharField(max_length=64, default="default")
    name = CharField(max_length=64)
    maintenance = BooleanField(default=False)
    draining = BooleanField(default=False)
    drain_round = IntegerField(default=0)
    updated_at = DateTimeField(null=True)

    class Meta:
        table_name = "nodes"
        primary_key = CompositeKey("cluster", "name")


class Placement(BaseModel):
    """The node an operation places its VM on, chosen once (pvekvm/placement.py)."""

    operation_id = BigIntegerField(primary_key=True)
    service_id = IntegerField()
    source = CharField(max_length=64, null=True)
    node = CharField(max_length=64)
    why = CharField(max_length=500, null=True)
    cluster = CharField(max_length=64, default="default")
    created_at = DateTimeField(null=True)

    class Meta:
        table_name = "placements"


class Reservation(BaseModel):
    """What an in-flight deploy will take on its node until its VM is there (node None: it
    waits for room since ``waiting_since``): pvekvm/placement.py."""

    operation_id = BigIntegerField(primary_key=True)
    service_id = IntegerField()
    node = CharField(max_length=64, null=True)
    storage = CharField(max_length=64)
    memory_mb = IntegerField()
    cores = SmallIntegerField()
    disk_gb = IntegerField()
    waiting_since = DateTimeField(null=True)
    reason = CharField(max_length=500, null=True)
    created_at = DateTimeField(null=True)

    class Meta:
        table_name = "reservations"


class ProductLocation(BaseModel):
    """A product offered in a cluster other than its home one: what differs there."""

    product_id = IntegerField()
    cluster = CharField(max_length=64)
    template_id = IntegerField()
    target_node = CharField(max_length=64)
    target_storage = CharField(max_length=64)
    ip_pool_id = IntegerField(null=True)
    ip6_pool_id = IntegerField(null=True)

    class Meta:
        table_name = "product_locations"
        primary_key = CompositeKey("product_id", "cluster")


ALL_MODELS: tuple[type[BaseModel], ...] = (
    Template, TemplateReplica, IpPool, Product, ProductTemplate, Service, VmidAllocation,
    IpAddress, Operation,
    OutboxEvent, HeldEvent, StepRun, Snapshot, Backup, BackupSchedule, DnsProvider, DnsZone,
    DnsRecordRow, Email, DeadLetter, AuditLog, SchemaVersion, TaskSlot, TaskClaim,
    TrafficUsage, TrafficCursor, ClientToken,
    FeedSequencer, WebhookEndpoint, WebhookDelivery, WebhookStream, ConsoleSession, Node, Placement,
    ClientFirewallRules,
    Reservation,
    ProductLocation,
)
