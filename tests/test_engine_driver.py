"""The engine's delicate branches, driven directly (workers/testing.py): duplicate and
previous-nudge redelivery, a lost compare-and-swap, a row busy under NOWAIT, backoff and give-up,
waiting for a turn, and a refusal that frees the service. Real MariaDB; virtual time; the steps
are probes that count their runs and answer what the test scripts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import cast

import pytest
from peewee import OperationalError

from pvekvm.config import EngineSettings, Settings
from pvekvm.lifecycle import ServiceStatus
from pvekvm.models import Operation, Product, Service, StepRun, Template, database
from steps.context import StepContext
from steps.machine import Done, Machine, Refused, Retry, RetryPolicy, StepResult, T
from steps.machines import MACHINES
from tests.locks import held_elsewhere
from workers import operations
from workers.engine import BUSY_DELAY_S, Engine
from workers.operations import OpStatus
from workers.testing import EngineDriver

SID = 31
# The probe machines' busy status, not one of ServiceStatus (cast: the type names the shipped
# machines' statuses; the engine writes whatever status a machine names).
PROBING = cast(ServiceStatus, "probing")


class Probe:
    """A step that records each run and answers from a script (the last answer repeats)."""

    def __init__(self, *answers: StepResult | Exception | Callable[[], StepResult]) -> None:
        self.answers = list(answers) or [Done("ok")]
        self.runs = 0

    def __call__(self, ctx: StepContext) -> StepResult:
        answer = self.answers[min(self.runs, len(self.answers) - 1)]
        self.runs += 1
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer


@pytest.fixture()
def service(clean_db) -> Service:
    tpl = Template.create(name="t", vmid=9000, node="pve1")
    prod = Product.create(name="p", cores=1, memory_mb=512, disk_gb=10, template_id=tpl.id,
                          target_node="pve1", target_storage="local-lvm")
    return Service.create(id=SID, client_id=1, product_id=prod.id, template_id=tpl.id,
                          email="d@example.com", hostname="d.example.com", status="ready")


@pytest.fixture()
def engine(database_url: str) -> Engine:
    settings = Settings(database_url=database_url, amqp_url="amqp://unused", proxmox=None,
                        engine=EngineSettings(max_attempts=4, retry_first_s=1.0,
                                              retry_max_s=60.0, wait_first_s=0.5,
                                              wait_max_s=4.0))
    return Engine(settings, worker="driver")


@pytest.fixture()
def machine(monkeypatch) -> Iterator[Callable[..., Machine]]:
    """Register a probe machine (kind ``probe``/``probe2``) for the test's length."""
    def make(*steps: Probe, kind: str = "probe", retry: RetryPolicy | None = None,
             busy: ServiceStatus | None = PROBING, admission: bool = False) -> Machine:
        states = [f"{kind}_{i}" for i in range(len(steps))] + ["done"]
        m = Machine(kind, kind.title(), tuple(
            T(states[i], pool="config", run=step, then=states[i + 1], label=f"Probe {i}",
              retry=retry) for i, step in enumerate(steps)), busy_status=busy,
            done_status=ServiceStatus.READY if busy else None, admission=admission)
        monkeypatch.setitem(MACHINES, kind, m)
        return m
    yield make


def _op(kind: str = "probe") -> Operation:
    return Operation.get((Operation.service_id == SID) & (Operation.kind == kind))


def test_a_clean_run_takes_each_step_once_and_frees_the_service(service, engine, machine):
    a, b = Probe(), Probe()
    machine(a, b)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    assert Service.get_by_id(SID).status == "probing"
    assert d.run() == 2
    assert (a.runs, b.runs) == (1, 1)
    op = _op()
    assert op.status == OpStatus.DONE and op.active_service is None
    assert Service.get_by_id(SID).status == "ready"


def test_steps_with_nothing_to_do_are_passed_by_in_the_previous_commit(service, engine,
                                                                        monkeypatch):
    """A step whose ``skip_if`` gives a reason is recorded as skipped with that reason and costs
    no message; one whose ``skip_if`` says it may have work runs."""
    a, b, c, d_ = Probe(), Probe(), Probe(), Probe()
    nothing = lambda ctx: "nothing to do here"  # noqa: E731
    m = Machine("probe", "Probe", (
        T("p_0", pool="config", run=a, then="p_1", label="First"),
        T("p_1", pool="disks", run=b, then="p_2", label="Idle one", skip_if=nothing),
        T("p_2", pool="disks", run=c, then="p_3", label="Idle two", skip_if=nothing),
        T("p_3", pool="network", run=d_, then="done", label="Busy",
          skip_if=lambda ctx: None),
    ), busy_status=PROBING, done_status=ServiceStatus.READY)
    monkeypatch.setitem(MACHINES, "probe", m)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    after_first = d.handle(d.next())
    assert [n.state for n in after_first.publish] == ["p_3"]   # one message: on to Busy
    assert d.run() == 1
    assert (a.runs, b.runs, c.runs, d_.runs) == (1, 0, 0, 1)
    runs = [(r.label, r.result, r.message) for r in
            StepRun.select().where(StepRun.service_id == SID).order_by(StepRun.id)]
    assert runs == [("First", "success", "ok"), ("Idle one", "skip", "nothing to do here"),
                    ("Idle two", "skip", "nothing to do here"), ("Busy", "success", "ok")]
    assert _op().status == OpStatus.DONE


def test_a_package_without_an_additional_disk_passes_its_three_steps_by(service, engine):
    """The real deploy map: the additional-disk steps skip by the package alone."""
    deploy = MACHINES["deploy"]
    disk_steps = [t for t in deploy.transitions if "additional disk" in t.label]
    assert len(disk_steps) == 3 and all(t.skip_if is not None for t in disk_steps)
    fresh = replace(engine.settings, engine=replace(engine.settings.engine, catalog_cache_s=0))

    def reasons() -> set[str | None]:
        ctx = StepContext(fresh, Operation(params="{}"), Service.get_by_id(SID), None)
        return {t.skip_if(ctx) for t in disk_steps if t.skip_if}

    assert reasons() == {"no additional disk in package"}
    Product.update(add_disk_gb=20).execute()
    assert reasons() == {None}


def test_a_duplicate_of_a_consumed_nudge_changes_nothing(service, engine, machine):
    a, b = Probe(), Probe(Retry("hold on", counts=False))
    machine(a, b)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    first = d.next()
    d.handle(first)
    version = _op().version
    assert d.handle(first).publish == []          # the same message again: stale
    assert a.runs == 1 and _op().version == version


def test_the_previous_nudge_redelivered_republishes_a_lost_next_nudge(service, engine, machine):
    """A crash between commit and publish: the message comes back and re-sends what was owed,
    once; the step does not run again."""
    a, b = Probe(), Probe()
    machine(a, b)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    first = d.next()
    lost = d.handle(first, publish=False).publish[0]    # committed, never published
    again = d.handle(first)                              # the broker redelivers the first
    assert [n.nudge_id for n in again.publish] == [lost.nudge_id]
    assert d.handle(first).publish == []                 # now published: plain stale
    assert d.run() == 1
    assert (a.runs, b.runs) == (1, 1) and _op().status == OpStatus.DONE


def test_a_lost_race_rolls_back_everything(service, engine, machine):
    """Another delivery moved the operation on while this one ran: its step's writes and its
    state change are both discarded."""
    def sneaky() -> StepResult:
        Operation.update(version=Operation.version + 1).where(Operation.service_id == SID) \
            .execute()
        return Done("moved")
    a = Probe(sneaky)
    machine(a)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    version = _op().version
    out = d.handle(d.next())
    assert out.publish == [] and out.log == []
    op = _op()
    assert op.version == version and op.state == "probe_0"    # the sneaky bump rolled back too
    assert StepRun.select().count() == 0


def test_a_locked_row_puts_the_message_back_on_a_short_delay(service, engine, machine):
    a = Probe()
    machine(a)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    nudge = d.next()
    with held_elsewhere(lambda: database.execute_sql(
            "SELECT id FROM operations WHERE service_id = %s FOR UPDATE", (SID,))) as let_go:
        out = d.handle(nudge)
        # the worker was not held on the lock it found busy (sending the nudge again writes
        # nothing to the locked row): the other transaction still holds it
        assert not let_go.is_set()
    assert [(n.nudge_id, n.delay_s) for n in out.publish] == [(nudge.nudge_id, BUSY_DELAY_S)]
    assert a.runs == 0
    assert d.run() == 1 and a.runs == 1


def test_a_deadlock_victim_comes_back_on_a_short_delay_not_to_the_queue(service, engine,
                                                                       machine):
    """InnoDB rolled the whole attempt back: the same nudge comes again shortly (the message
    is acked), instead of the message going back to its queue, where each return counts
    against the delivery limit and the tenth would park it unexplained."""
    a = Probe(OperationalError(1213, "Deadlock found when trying to get lock"), Done("ok"))
    machine(a)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    nudge = d.next()
    version = _op().version
    out = d.handle(nudge)
    assert [(n.nudge_id, n.delay_s) for n in out.publish] == [(nudge.nudge_id, BUSY_DELAY_S)]
    assert _op().version == version and StepRun.select().count() == 0
    assert d.run() == 1 and a.runs == 2
    assert _op().status == OpStatus.DONE


def test_a_deadlock_inside_a_savepoint_is_recognised_under_the_error_it_causes(
        service, engine, machine):
    """A deadlock in a nested atomic() surfaces as 'SAVEPOINT does not exist' (InnoDB rolled
    everything back): the nudge still comes again shortly."""
    def savepoint_gone() -> StepResult:
        try:
            raise OperationalError(1213, "Deadlock found when trying to get lock")
        except OperationalError:
            raise OperationalError(1305, "SAVEPOINT s1 does not exist") from None

    a = Probe(savepoint_gone, Done("ok"))
    machine(a)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    nudge = d.next()
    out = d.handle(nudge)
    assert [(n.nudge_id, n.delay_s) for n in out.publish] == [(nudge.nudge_id, BUSY_DELAY_S)]
    assert d.run() == 1 and _op().status == OpStatus.DONE


def test_faults_back_off_on_the_delay_tiers_then_pause(service, engine, machine):
    a = Probe(Retry("storage busy"))
    machine(a)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    d.run()
    delays = [round(b - a_, 3) for (a_, _), (b, _) in zip(d.delivered, d.delivered[1:],
                                                          strict=False)]
    assert delays == [1.0, 2.0, 5.0, 15.0]   # 1, 2, 4, 8 s asked; the tiers they land on
    op = _op()
    assert op.status == OpStatus.PAUSED and op.active_service == SID
    assert "storage busy (gave up after 4 attempts)" in (op.error or "")
    assert any("Will retry in 5s (attempt 3/4)" in line for line in d.log)
    assert Service.get_by_id(SID).status == "probing"          # a fault keeps the service


def test_a_transition_policy_overrides_the_settings(service, engine, machine):
    a = Probe(Retry("slow"))
    machine(a, retry=RetryPolicy(first_s=0.25, max_attempts=2))
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    d.run()
    assert a.runs == 3 and d.now == pytest.approx(0.25 + 0.5)
    assert "gave up after 2 attempts" in (_op().error or "")


def test_waiting_for_a_turn_never_gives_up_and_caps_its_delay(service, engine, machine):
    a = Probe(*[Retry("no slot", counts=False)] * 9, Done("got one"))
    machine(a)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    d.run()
    gaps = [b - a_ for (a_, _), (b, _) in zip(d.delivered, d.delivered[1:], strict=False)]
    assert a.runs == 10 and _op().status == OpStatus.DONE
    assert gaps[:4] == [0.5, 1.0, 2.0, 5.0] and max(gaps) == 5.0   # 4 s cap → 5 s tier


def test_a_refusal_fails_at_once_frees_the_service_and_starts_the_next(service, engine, machine):
    machine(Probe(Refused("over the limit")))
    nxt = Probe()
    machine(nxt, kind="probe2")
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    d.begin(SID, "probe2", "k2")                       # queued behind
    assert _op("probe2").status == OpStatus.QUEUED
    d.run()
    first = _op()
    assert first.status == OpStatus.FAILED and first.error == "over the limit"
    assert first.active_service is None and first.attempt == 0
    assert nxt.runs == 1 and _op("probe2").status == OpStatus.DONE
    assert Service.get_by_id(SID).status == "ready"


def test_a_burst_is_admitted_first_come_first_served(service, machine, database_url):
    """With a window of 2, six deploys queue in arrival order: each one that ends admits the
    oldest waiting, so they finish in the order they came (not all together at the end)."""
    for sid in range(41, 47):
        Service.create(id=sid, client_id=1, product_id=service.product_id,
                       template_id=service.template_id, email="d@example.com",
                       hostname=f"h{sid}.example.com", status="pending")
    probe = Probe()
    machine(probe, admission=True)
    settings = Settings(database_url=database_url, amqp_url="amqp://unused", proxmox=None,
                        engine=EngineSettings(deploy_window=2))
    d = EngineDriver(Engine(settings, worker="driver"))
    for sid in range(41, 47):
        with database.atomic():
            d.accept(operations.begin(sid, "probe", f"k{sid}", {}, window=2))
    running = Operation.select().where(Operation.status == OpStatus.RUNNING).count()
    assert running == 2
    d.run()
    finished = [o.service_id for o in Operation.select().where(Operation.kind == "probe")
                .order_by(Operation.finished_at, Operation.id)]
    assert finished == list(range(41, 47))
    assert probe.runs == 6


def test_the_message_that_ended_an_operation_republishes_the_next_ones_lost_start(
        service, engine, machine):
    """A crash between the commit that finished one operation (and started the queued next)
    and the publish of the next one's first nudge: the redelivered message sends it again at
    once, not only the reconciler seconds later."""
    machine(Probe())
    nxt = Probe()
    machine(nxt, kind="probe2")
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    d.begin(SID, "probe2", "k2")
    last = d.next()
    lost = d.handle(last, publish=False).publish     # committed: probe done, probe2 started
    assert [n.operation_id for n in lost] == [_op("probe2").id]
    assert d.queue == [] and nxt.runs == 0
    again = d.handle(last)                           # the broker redelivers the last message
    assert [n.nudge_id for n in again.publish] == [lost[0].nudge_id]
    assert d.handle(last).publish == []              # once published: plain stale
    d.run()
    assert nxt.runs == 1 and _op("probe2").status == OpStatus.DONE


def test_a_chain_carries_the_row_only_while_its_version_holds(service, engine, machine):
    """The next step of a chain uses the row its previous step committed; a row another
    delivery changed meanwhile (its version moved) is read afresh, so a stale copy never
    runs a step."""
    a, b, c = Probe(), Probe(), Probe()
    machine(a, b, c)
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    first = d.next()
    assert first is not None
    out = engine.handle_nudge(first)
    assert out.row is not None and out.row.state == "probe_1" and out.in_hand == out.row.id
    (second,) = out.publish
    carried = out.row
    # someone else moves the operation on (a duplicate delivery, an operator): version + 1
    fresh = _op()
    operations.cas(fresh, fresh.nudge_id, polls=7)
    again = engine.handle_nudge(second, carried)
    assert b.runs == 1 and again.row is not None and again.row.polls == 0  # read afresh
    # with the carried row of that commit, the third step runs on it as it is
    (third,) = again.publish
    engine.handle_nudge(third, again.row)
    assert (a.runs, b.runs, c.runs) == (1, 1, 1) and _op().status == OpStatus.DONE
    stale = engine.handle_nudge(third, carried)  # a stale copy of a finished operation
    assert stale.publish == [] and c.runs == 1


def test_the_consumer_sends_a_busy_nudge_again_without_waiting_on_the_lock(service, engine,
                                                                          machine):
    """The consumer's after-commit delivery of a busy outcome publishes the nudge again and
    writes nothing to the operation row, whose lock another worker holds for its step."""
    machine(Probe())
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")
    nudge = d.next()
    sent: list[tuple[str, float]] = []

    class Recording:
        def publish_nudge(self, nudge) -> None:
            sent.append((nudge.nudge_id, nudge.delay_s))

    with held_elsewhere(lambda: database.execute_sql(
            "SELECT id FROM operations WHERE service_id = %s FOR UPDATE", (SID,))) as let_go:
        out = engine.handle_nudge(nudge)
        operations.deliver(out, Recording())  # type: ignore[arg-type]
        assert not let_go.is_set()
    assert sent == [(nudge.nudge_id, BUSY_DELAY_S)]


def test_the_engine_runs_the_machines_it_was_given_not_the_module_table(service, engine):
    """``Engine(machines=)`` reaches every branch: starting, advancing, finishing and starting
    the operation queued behind, with kinds the shared table does not have."""
    a, b = Probe(), Probe()
    own = {kind: Machine(kind, kind.title(), (
        T(f"{kind}_0", pool="config", run=probe, then="done", label=f"{kind} step"),),
        busy_status=PROBING, done_status=ServiceStatus.READY)
        for kind, probe in (("own1", a), ("own2", b))}
    assert not own.keys() & MACHINES.keys()
    d = EngineDriver(Engine(engine.settings, worker="driver", machines={**MACHINES, **own}))
    d.begin(SID, "own1", "k1")
    d.begin(SID, "own2", "k2")                       # queued behind own1
    assert d.run() == 2 and (a.runs, b.runs) == (1, 1)
    assert {o.kind: o.status for o in Operation.select()} == {"own1": OpStatus.DONE,
                                                             "own2": OpStatus.DONE}


def test_the_stub_broker_chains_steps_as_a_worker_serving_their_pool(service, engine, machine):
    """The runner under the stub broker is the consumer's: serving the next step's pool, it
    runs the whole operation in the one delivery (each step recorded once); serving none, each
    step is a message of its own."""
    probes = Probe(), Probe(), Probe()
    machine(*probes)
    d = EngineDriver(engine, chain=["config"])
    d.begin(SID, "probe", "k1")
    handled = d.deliver(d.pending()[0])
    assert handled.ack and len(handled.outcomes) == 3 and d.pending() == []
    assert [p.runs for p in probes] == [1, 1, 1] and _op().status == OpStatus.DONE
    assert StepRun.select().count() == 3


def test_a_step_message_that_crashes_the_runner_goes_back_and_is_parked_at_its_limit(
        service, engine, machine, monkeypatch):
    """A bug outside the step (here: the engine itself) gives the message back, counted; its
    last delivery is parked with the reason, not lost and not looping."""
    from pvekvm import messaging
    machine(Probe())
    d = EngineDriver(engine)
    d.begin(SID, "probe", "k1")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "handle_nudge", broken)
    for n in range(messaging.DELIVERY_LIMIT):
        [message] = d.pending()
        assert message.deliveries == n
        assert not d.deliver(message).ack
    [spent] = d.pending()
    assert d.deliver(spent).result == "refused"
    [(_, reason, source)] = d.dead
    assert source == "config" and "given back" in reason and d.pending() == []
