"""How the shell and the operator hear back: refusals and outcome statuses."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["BAD_REQUEST_CODES", "OutcomeStatus", "Refusal", "RefusalCode"]


class RefusalCode(StrEnum):
    """Why an operator request was refused, for machines (the API and the CLI)."""

    UNKNOWN_NODE = "unknown_node"
    IN_FLIGHT = "in_flight"
    WRITABLE_PRIMARY = "writable_primary"
    NOT_ELIGIBLE = "not_eligible"
    PAUSED = "paused"
    NO_PRIMARY = "no_primary"
    NO_CANDIDATE = "no_candidate"
    NOT_FENCED_WRITABLE = "not_fenced_writable"
    NOT_A_REPLICA = "not_a_replica"
    IS_PRIMARY = "is_primary"
    REJOINING = "rejoining"


# Refusal codes that mean the request itself is wrong (HTTP 400); any other code
# means it conflicts with the cluster's current situation (HTTP 409).
BAD_REQUEST_CODES = frozenset({RefusalCode.UNKNOWN_NODE})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an operator request was refused, as a value (no message parsing needed)."""

    code: RefusalCode
    # What is wrong and what would allow the request (shown to the operator).
    message: str

    @property
    def bad_request(self) -> bool:
        """True when the request is malformed rather than in conflict with the cluster."""
        return self.code in BAD_REQUEST_CODES


class OutcomeStatus(StrEnum):
    """What the shell knows about an action it carried out."""

    SUCCEEDED = "succeeded"
    # The action certainly changed nothing (e.g. could not connect, node not a replica):
    # for a Promote, another candidate may be tried at once.
    FAILED = "failed"
    # It may or may not have taken effect (e.g. pg_promote did not finish in time).
    # When in doubt, report this.
    UNCERTAIN = "uncertain"
