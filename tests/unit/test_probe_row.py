import json
from typing import Any

from hacontrol.core.model import Role, parse_lsn
from hacontrol.io.probe import observation_from_row


def _row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "in_recovery": True,
        "read_only": False,
        "current_lsn": None,
        "primary_tli": None,
        "receive_lsn": "0/3000100",
        "replay_lsn": "0/3000000",
        "replay_lag_s": 0.5,
        "checkpoint_tli": 1,
        "system_identifier": 42,
        "wal_receiver": json.dumps(
            {"status": "streaming", "sender_host": "127.0.0.1", "sender_port": 5432,
             "received_tli": 2, "last_msg_age_s": 0.1}
        ),
        "replication": "[]",
    }
    row.update(over)
    return row


def test_replica_row() -> None:
    obs = observation_from_row("pg2", 10.0, 0.01, _row())
    assert obs.reachable and obs.role is Role.REPLICA
    assert obs.timeline == 2  # the receiver's timeline beats the last checkpoint's
    assert obs.receive_lsn == parse_lsn("0/3000100")
    assert obs.wal_receiver is not None and obs.wal_receiver.status == "streaming"
    assert obs.wal_receiver.sender_port == 5432
    assert obs.wal_position == parse_lsn("0/3000100")


def test_replica_without_receiver_uses_checkpoint_timeline() -> None:
    obs = observation_from_row("pg2", 10.0, 0.01, _row(wal_receiver=None, checkpoint_tli=3))
    assert obs.wal_receiver is None
    assert obs.timeline == 3


def test_primary_row_with_replication() -> None:
    rows = [{"application_name": "pg2", "client_addr": "127.0.0.1", "state": "streaming",
             "sync_state": "async", "sent_lsn": "0/5", "flush_lsn": "0/4", "replay_lsn": None}]
    obs = observation_from_row(
        "pg1", 1.0, 0.002,
        _row(in_recovery=False, current_lsn="0/10", primary_tli=4, receive_lsn=None,
             replay_lsn=None, replay_lag_s=None, wal_receiver=None, replication=json.dumps(rows),
             read_only=True),
    )
    assert obs.role is Role.PRIMARY and obs.timeline == 4 and obs.read_only is True
    assert obs.wal_position == 16
    assert obs.replication[0].application_name == "pg2"
    assert obs.replication[0].flush_lsn == 4 and obs.replication[0].replay_lsn is None


def test_slots_parse_across_versions() -> None:
    slots = [
        {"slot_name": "hacontrol_pg2", "slot_type": "physical", "active": True,
         "restart_lsn": "0/3000000", "wal_status": "reserved"},
        # PostgreSQL 17+ columns: failover, synced, invalidation_reason, temporary.
        {"slot_name": "cdc", "slot_type": "logical", "active": False, "database": "app",
         "plugin": "pgoutput", "restart_lsn": "0/2000000", "confirmed_flush_lsn": "0/2000100",
         "failover": True, "synced": True, "temporary": True, "invalidation_reason": None},
        # PostgreSQL 16: conflicting only.
        {"slot_name": "old", "slot_type": "logical", "active": False, "conflicting": True},
    ]
    obs = observation_from_row("pg2", 1.0, 0.01, _row(
        slots=json.dumps(slots), primary_slot_name="hacontrol_pg2",
        sync_replication_slots="on", server_version=180001, max_slot_wal_keep_mb=-1))
    assert obs.server_version == 180001 and obs.slot_sync is True
    assert obs.primary_slot_name == "hacontrol_pg2" and obs.max_slot_wal_keep_mb == -1
    member = obs.slot("hacontrol_pg2")
    assert member is not None and member.active and member.valid
    assert obs.retained_bytes(member) == 0x100  # received 0/3000100
    cdc = obs.slot("cdc")
    assert cdc is not None and cdc.synced and cdc.failover and cdc.temporary
    assert cdc.confirmed_flush_lsn == parse_lsn("0/2000100")
    old = obs.slot("old")
    assert old is not None and not old.valid and old.invalidated == "conflicting"


def test_slots_not_read_stay_unknown() -> None:
    obs = observation_from_row("pg2", 1.0, 0.01, _row())
    assert obs.slots is None and obs.slot_sync is None and obs.server_version is None
