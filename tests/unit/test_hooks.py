import time

from hacontrol.io.hooks import run_hook


async def test_hook_gets_env_and_output() -> None:
    result = await run_hook('echo "node=$HACONTROL_NODE"; exit 3', {"HACONTROL_NODE": "pg2"}, 5)
    assert not result.ok and result.returncode == 3
    assert result.output.strip() == "node=pg2"


async def test_hook_timeout_kills_the_whole_group() -> None:
    started = time.monotonic()
    # The child sleeps in a subshell: killing only the shell would leave it running
    # and keep the output pipe open.
    result = await run_hook("(sleep 30; echo late) & wait", {}, 0.3)
    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 5


def test_every_hook_environment_comes_from_one_builder() -> None:
    from hacontrol.core.events import hook_env, role_change_env

    assert role_change_env("pg2", None, 3, "failover") == {
        "HACONTROL_EVENT": "on_role_change", "HACONTROL_NEW_PRIMARY": "pg2",
        "HACONTROL_OLD_PRIMARY": "", "HACONTROL_TIMELINE": "3", "HACONTROL_REASON": "failover",
    }
    assert hook_env("fence", node="pg1", reason="split brain") == {
        "HACONTROL_EVENT": "fence", "HACONTROL_NODE": "pg1", "HACONTROL_REASON": "split brain",
    }
