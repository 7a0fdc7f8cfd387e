"""The replication slots in `hacontrol status`."""

from __future__ import annotations

from hacontrol.cli.render import render_status, slot_lines


def test_each_slot_is_one_line_with_its_state_and_retained_wal() -> None:
    rows = [
        {"name": "pg1", "slots": [
            {"name": "hacontrol_pg2", "kind": "physical", "active": True,
             "retained_bytes": 2048, "valid": True, "synced": None, "wal_status": "reserved"},
            {"name": "hacontrol_pg3", "kind": "physical", "active": False,
             "retained_bytes": None, "valid": False, "synced": None, "wal_status": "lost"},
        ]},
        {"name": "pg2", "slots": [
            {"name": "cdc", "kind": "logical", "active": False, "retained_bytes": 0,
             "valid": True, "synced": True, "wal_status": "reserved"},
        ]},
    ]
    lines = slot_lines(rows)
    assert lines[:2] == ["", "replication slots:"]
    assert "pg1: hacontrol_pg2 physical active, retains 2.0 KiB" in lines[2]
    assert "inactive, retains -, INVALID (lost)" in lines[3]
    assert lines[4].endswith("cdc logical inactive, retains 0 B, synced")


def test_no_slots_no_block() -> None:
    assert slot_lines([{"name": "pg1", "slots": []}, {"name": "pg2"}]) == []
    assert "replication slots" not in render_status({"nodes": []}, width=80)
