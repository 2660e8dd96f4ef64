"""`./gantry run` and `./gantry node` with a shared Redis (launch/run.py): which programs run,
and the URLs refused before anything starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from launch import run


def settings(tmp_path: Path, url: str = "", node_only: bool = False) -> run.Settings:
    private = f"unix://{tmp_path / 'run' / 'redis' / 'redis.sock'}"
    return run.Settings(
        run=tmp_path / "run", venv=tmp_path / "venv", web_user="gantry", web_home=tmp_path,
        bind="127.0.0.1", port=8000, registry_port=5000, registry_dir=tmp_path / "reg",
        demo=False, restart_delay=2.0, redis_url=url or private, node_only=node_only,
    )  # fmt: skip


def test_the_stack_runs_its_own_redis_unless_told_to_join_one(tmp_path: Path) -> None:
    own = settings(tmp_path)
    assert own.own_redis and set(run.programs(own, tmp_path, None)) == {"redis", "engine", "web"}
    shared = settings(tmp_path, "redis://:s3cret@10.1.2.3:6379/0")
    assert not shared.own_redis
    assert set(run.programs(shared, tmp_path, None)) == {"engine", "web"}
    node = replace(shared, node_only=True)
    assert set(run.programs(node, tmp_path, tmp_path / "registry.yml")) == {"engine"}
    run.check_redis_url(shared)
    run.check_redis_url(node)
    run.check_redis_url(settings(tmp_path, "rediss://:pw@redis.example:6380/0"))
    run.check_redis_url(settings(tmp_path, "unix:///srv/redis/shared.sock"))


@pytest.mark.parametrize(
    ("url", "node_only", "said"),
    [
        ("redis://10.1.2.3:6379/0", False, "has no password"),
        ("rediss://user@redis.example:6380", False, "has no password"),
        ("http://10.1.2.3:6379", False, "redis://, rediss:// (TLS) or unix:// only"),
        ("", True, "./gantry node joins the Redis its web and other nodes share"),
    ],
)
def test_a_redis_url_anyone_could_use_or_none_shared_is_refused(
    tmp_path: Path, url: str, node_only: bool, said: str
) -> None:
    with pytest.raises(run.Refused, match=said.replace("(", r"\(").replace(")", r"\)")):
        run.check_redis_url(settings(tmp_path, url, node_only))


def test_a_password_never_reaches_a_log() -> None:
    assert run.shown_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert run.shown_url("rediss://u:s3cret@h/1") == "rediss://u:***@h/1"
    assert run.shown_url("unix:///run/r.sock") == "unix:///run/r.sock"
