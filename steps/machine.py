"""Machines and step answers live in the core (:mod:`pvekvm.lifecycle`); this module re-exports
them for the steps and tests written against it."""

from pvekvm.lifecycle import (
    Action,
    Backoff,
    Done,
    Machine,
    Refused,
    Retry,
    RetryPolicy,
    SkipIf,
    Step,
    StepFailed,
    StepResult,
    T,
    Transition,
    Wait,
    backoff,
    chain,
)

__all__ = ["Action", "Backoff", "Done", "Machine", "Refused", "Retry", "RetryPolicy", "SkipIf",
           "Step", "StepFailed", "StepResult", "T", "Transition", "Wait", "backoff", "chain"]
