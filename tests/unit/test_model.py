from hacontrol.core.model import Observation, Role, format_lsn, parse_lsn


def test_lsn_round_trip() -> None:
    for text in ("0/0", "0/3000060", "16/B374D848", "FFFFFFFF/FFFFFFFF"):
        value = parse_lsn(text)
        assert value is not None
        assert format_lsn(value) == text


def test_lsn_order_matches_postgres() -> None:
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")  # type: ignore[operator]


def test_wal_position_per_role() -> None:
    primary = Observation("a", 0.0, True, role=Role.PRIMARY, current_lsn=100, receive_lsn=5)
    replica = Observation("b", 0.0, True, role=Role.REPLICA, receive_lsn=90, replay_lsn=80)
    replay_only = Observation("c", 0.0, True, role=Role.REPLICA, replay_lsn=70)
    assert primary.wal_position == 100
    assert replica.wal_position == 90
    assert replay_only.wal_position == 70
    assert Observation("d", 0.0, False).wal_position is None
