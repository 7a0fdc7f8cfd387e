"""Moved to :mod:`hacontrol.core`; this path keeps working for one release."""

from hacontrol.core.apply import apply_outcome
from hacontrol.core.candidates import preferred_node, rank_candidates
from hacontrol.core.confirm import Confirmation, confirm_failure
from hacontrol.core.events import ROLE_CHANGE_HOOK
from hacontrol.core.handle import handle_request
from hacontrol.core.identity import learn_identity, screen_foreign
from hacontrol.core.model import Endpoint
from hacontrol.core.round import decide
from hacontrol.io.dsn import dsn_endpoints as endpoints

__all__ = [
    "ROLE_CHANGE_HOOK",
    "Confirmation",
    "Endpoint",
    "apply_outcome",
    "confirm_failure",
    "decide",
    "endpoints",
    "handle_request",
    "learn_identity",
    "preferred_node",
    "rank_candidates",
    "screen_foreign",
]
