"""The controllers block of ``hacontrol status`` (with ``[dcs]``)."""

from __future__ import annotations

from hacontrol.cli.render import controllers_lines, render_status


def test_no_controllers_block_without_dcs() -> None:
    assert controllers_lines(None) == []
    assert "controllers" not in render_status({"nodes": []}, width=80)


def test_the_leader_its_epoch_and_this_controller_are_shown() -> None:
    lines = controllers_lines({
        "name": "ctl-b", "dcs_up": True, "leader": "ctl-a",
        "members": [
            {"name": "ctl-a", "role": "leader", "epoch": 41, "api": "10.0.0.1:8008",
             "last_seen_s": 1.2},
            {"name": "ctl-b", "role": "standby", "epoch": None, "api": None, "last_seen_s": 0.3},
        ],
    })
    assert lines[1] == "controllers (etcd up):"
    assert lines[2].split() == ["ctl-a", "leader", "epoch", "41", "seen", "1.2", "s", "ago",
                                "api", "10.0.0.1:8008"]
    assert lines[3].startswith(" *ctl-b") and "standby" in lines[3] and "epoch" not in lines[3]


def test_etcd_down_and_no_leader_are_said() -> None:
    text = "\n".join(controllers_lines({"name": "ctl-a", "dcs_up": False, "leader": None,
                                        "dcs": "etcd did not answer /v3/kv/range within 0.5 s",
                                        "members": []}))
    assert "etcd DOWN: etcd did not answer" in text
    assert "no controller leads now: no automatic failover until one does" in text
