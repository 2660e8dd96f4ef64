"""Container networks with netavark and aardvark-dns, for real: namespaces, a bridge, veths,
iptables rules. Traffic stays on this machine: the tests talk only to containers in the
namespaces they made, and to 127.0.0.1. Each test's networks use 10.91.x.0/24 and bridges
named gt*, which overlap nothing of the host's (checked by the engine itself)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from engine.api.base import Context, invoke
from engine.cli import main
from engine.config import EngineConfig
from engine.core import Engine
from engine.errors import EngineError, InvalidInputError, NotFoundError, PolicyError
from engine.network import netns
from engine.network.networks import dns_servers, host_routes
from engine.network.store import Networks
from engine.protocol import LEARNER, verbs
from engine.runtime.lifecycle import Lifecycle
from engine.storage.containers import Containers
from tests.engine.runtools import (
    RUNTIME_REASON,
    Census,
    can_run_containers,
    no_leaks,
    wait_until,
    worker_started,
)
from tests.imagetools import busybox_image
from tests.skips import requires

pytestmark = [requires(can_run_containers(), RUNTIME_REASON), pytest.mark.privileged]

TEST_NETWORK = {"name": "gtest", "subnet": "10.91.0.0/24", "bridge": "gt0"}
GENERIC_CHAINS = ("NETAVARK-HOSTPORT-DNAT", "NETAVARK-HOSTPORT-MASQ", "NETAVARK-HOSTPORT-SETMARK")
HTTPD = "mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 8080 -h /www"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Engine]:
    """An engine whose default network is the test's own, with busybox, its exit watcher and
    reconciliation running as in the worker; everything removed afterwards."""
    engine = Engine(
        EngineConfig(
            root=tmp_path / "root",
            node="nettest",
            sandbox_root=tmp_path / "sandbox",
            network=dict(TEST_NETWORK),
        )
    )
    engine.ensure_root()
    busybox_image(engine)
    with worker_started(engine):
        yield engine
    for name in [n.name for n in engine.get(Networks).all() if not n.default]:
        engine.get(Networks).remove(name, [])


def create(engine: Engine, *command: str, role: str | None = None, **args: Any) -> str:
    ctx = Context(engine, role=role, name="ann" if role else None)
    made = invoke(
        ctx, verbs.CONTAINER_CREATE, verbs.Create(image="busybox", command=list(command), **args)
    )
    return str(made["Id"])


def start(engine: Engine, ref: str) -> None:
    engine.get(Lifecycle).start(ref)


def run(engine: Engine, ref: str, *command: str) -> str:
    """exec in the container; its stdout (fails on a non-zero exit)."""
    result = invoke(Context(engine), verbs.EXEC_RUN, verbs.ExecRun(id=ref, command=list(command)))
    assert result["exit_code"] == 0, result
    return str(result["stdout"])


def firewall() -> list[str]:
    """netavark's iptables rules (nat and filter) but the generic chains it keeps for good."""
    rules = []
    for table in ("nat", "filter"):
        out = subprocess.run(
            ["iptables", "-t", table, "-S"], capture_output=True, text=True, check=True
        ).stdout
        rules += [
            f"{table} {r}"
            for r in out.splitlines()
            if "NETAVARK" in r.upper() and not any(c in r for c in GENERIC_CHAINS)
            and r not in ("-N NETAVARK_FORWARD",)
            and "netavark firewall plugin rules" not in r
        ]  # fmt: skip
    return rules


def links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def aardvark_entries(engine: Engine) -> list[str]:
    directory = Path(engine.config.root) / "networks" / "netavark" / "aardvark-dns"
    if not directory.is_dir():
        return []
    entries = []
    for path in directory.iterdir():
        if path.name not in ("aardvark.pid",) and path.is_file():
            entries += path.read_text().splitlines()[1:]
    return entries


def leases(engine: Engine) -> list[str]:
    base = Path(engine.config.root) / "networks"
    return [str(p.relative_to(base)) for d in ("ipam", "ports") for p in (base / d).rglob("*")
            if p.is_file()]  # fmt: skip


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (127.0.0.1 only)
        return str(response.read().decode())


# -- networks ---------------------------------------------------------------------------------
def test_networks_are_made_listed_inspected_and_removed_with_podmans_words(
    net: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    config = tmp_path / "engine.json"
    config.write_text(json.dumps({"network": TEST_NETWORK}))
    monkeypatch.setenv("GANTRY_CONFIG", str(config))
    root = ["--root", str(net.config.root)]

    def cli(*argv: str) -> tuple[int, str, str]:
        code = main([*root, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert cli("network", "create", "--subnet", "10.91.7.0/24", "lab") == (0, "lab\n", "")
    code, out, _ = cli("network", "ls")
    table = out.splitlines()
    assert table[0].split()[:3] == ["NETWORK", "ID", "NAME"] and len(table) == 3
    assert table[1].split()[1:3] == ["gtest", "bridge"] and "10.91.7.0/24" in table[2]
    assert cli("network", "ls", "--format", "{{.Name}} {{.Subnet}}")[1] == (
        "gtest 10.91.0.0/24\nlab 10.91.7.0/24\n"
    )
    [lab] = json.loads(cli("network", "inspect", "lab")[1])
    assert lab["driver"] == "bridge" and lab["subnets"] == [
        {"subnet": "10.91.7.0/24", "gateway": "10.91.7.1"}
    ]
    assert lab["network_interface"].startswith("gantry") and lab["dns_enabled"] is True
    cid = create(net, "sleep", "60", network="lab", name="user1")
    code, _, err = cli("network", "rm", "lab")
    assert code != 0 and "used by containers user1" in err
    net.get(Lifecycle).containers.remove(cid, force=True)
    assert cli("network", "rm", "lab") == (0, "lab\n", "")
    code, _, err = cli("network", "rm", "gtest")
    assert code != 0 and "is the default network" in err
    code, _, err = cli("network", "inspect", "lab")
    assert code != 0 and "network lab not found" in err


def _host_route() -> str:
    """A /24 inside one of the host's routes (not the default route)."""
    route, _ = host_routes()[0]
    return f"{route.network_address}/{max(route.prefixlen, 24)}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": "Lab"}, "must match [a-z0-9][a-z0-9_.-]{0,62}"),
        ({"name": "-lab"}, "must match"),
        ({"name": "a" * 64}, "must match"),
        ({"name": "la b"}, "must match"),
        ({"name": "host"}, "is reserved"),
        ({"name": "n1", "subnet": "10.91.3.0/33"}, "subnet '10.91.3.0/33'"),
        ({"name": "n1", "subnet": "10.91.3.1/24"}, "has host bits set"),
        ({"name": "n1", "subnet": "10.91.3.0/30"}, "the prefix must be /8 to /29"),
        ({"name": "n1", "subnet": "10.91.3.0/24", "gateway": "10.91.4.1"}, "not a host address"),
        ({"name": "n1", "subnet": "127.1.0.0/16"}, "overlaps loopback"),
        ({"name": "n1", "subnet": "ROUTE"}, "overlaps the host's route to"),
        ({"name": "n1", "subnet": "DNS"}, "overlaps the host's DNS server"),
        ({"name": "n1", "subnet": "10.91.0.128/25"}, "overlaps network gtest"),
        ({"name": "gtest"}, "already exists"),
        ({"name": "n1", "bridge": "eth0;reboot"}, "bridge name 'eth0;reboot': at most 15"),
        ({"name": "n1", "bridge": "b" * 16}, "at most 15 of [a-z0-9_.-]"),
        ({"name": "n1", "gateway": "10.91.3.1"}, "--gateway needs --subnet"),
    ],
)
def test_bad_networks_are_refused_and_nothing_is_made(
    net: Engine, args: dict[str, Any], message: str
) -> None:
    if args.get("subnet") == "ROUTE":
        args = {**args, "subnet": _host_route()}
    if args.get("subnet") == "DNS":
        servers = dns_servers()
        if not servers:
            pytest.skip("no IPv4 DNS server in /etc/resolv.conf")
        args = {**args, "subnet": f"{servers[0]}/29".rsplit(".", 1)[0] + ".0/24"}
    before = [n.name for n in net.get(Networks).all()]
    with pytest.raises(EngineError) as err:
        invoke(Context(net), verbs.NETWORK_CREATE, verbs.CreateNetwork(**args))
    assert message in err.value.message
    assert [n.name for n in net.get(Networks).all()] == before


def test_only_an_admin_makes_networks(net: Engine) -> None:
    with pytest.raises(PolicyError, match="only an admin"):
        invoke(
            Context(net, role=LEARNER, name="ann"),
            verbs.NETWORK_CREATE,
            verbs.CreateNetwork(name="mine"),
        )


# -- containers -------------------------------------------------------------------------------
def test_a_published_port_serves_what_httpd_in_the_container_serves(net: Engine) -> None:
    port = free_port()
    cid = create(net, "sh", "-c", HTTPD.format(name="web"), name="web",
                 publish=[f"127.0.0.1:{port}:8080"])  # fmt: skip
    start(net, cid)
    assert wait_until(lambda: _get_or_none(f"http://127.0.0.1:{port}/")) == "hello-from-web\n"
    shown = invoke(Context(net), verbs.CONTAINER_INSPECT, verbs.Id(id="web"))
    settings = shown["NetworkSettings"]
    assert settings["Ports"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert settings["IPAddress"].startswith("10.91.0.") and settings["Gateway"] == "10.91.0.1"
    assert settings["Networks"]["gtest"]["IPAddress"] == settings["IPAddress"]
    assert (
        settings["SandboxKey"] == str(netns.path_of(cid))
        and shown["HostConfig"]["NetworkMode"] == "gtest"
    )
    spec = json.loads(Path(shown["OCIConfigPath"]).read_text())
    assert {"type": "network", "path": str(netns.path_of(cid))} in spec["linux"]["namespaces"]
    assert (
        f"-p tcp -m tcp --dport {port} -j DNAT --to-destination {settings['IPAddress']}:8080"
        in ("\n".join(firewall()))
    )


def _get_or_none(url: str) -> str | None:
    try:
        return get(url)
    except OSError:
        return None


def test_two_containers_on_one_network_reach_each_other_by_address_and_name(net: Engine) -> None:
    invoke(
        Context(net),
        verbs.NETWORK_CREATE,
        verbs.CreateNetwork(name="pair", subnet="10.91.9.0/24", bridge="gt9"),
    )
    server = create(net, "sh", "-c", HTTPD.format(name="server"), name="server", network="pair")
    client = create(net, "sleep", "600", name="client", network="pair")
    start(net, server)
    start(net, client)
    address = invoke(Context(net), verbs.CONTAINER_INSPECT, verbs.Id(id="server"))[
        "NetworkSettings"
    ]["IPAddress"]
    assert address.startswith("10.91.9.")

    def fetch(host: str) -> str | None:
        result = invoke(
            Context(net), verbs.EXEC_RUN,
            verbs.ExecRun(id="client", command=["wget", "-qO-", f"http://{host}:8080/"]),
        )  # fmt: skip
        return str(result["stdout"]) if result["exit_code"] == 0 else None

    assert wait_until(lambda: fetch(address)) == "hello-from-server\n"
    assert wait_until(lambda: fetch("server")) == "hello-from-server\n"  # aardvark-dns
    resolv = run(net, "client", "cat", "/etc/resolv.conf")
    assert "nameserver 10.91.9.1" in resolv and "search dns.podman" in resolv
    assert run(net, "client", "hostname").strip() in run(net, "client", "cat", "/etc/hosts")
    assert f"{address}\t" in run(net, "server", "cat", "/etc/hosts")  # itself, at its address


def test_network_none_has_only_loopback(net: Engine) -> None:
    cid = create(net, "sleep", "600", network="none")
    start(net, cid)
    assert run(net, cid, "ls", "/sys/class/net").split() == ["lo"]
    assert not netns.path_of(cid).exists()


def test_host_network_needs_the_policy_and_never_a_learner(net: Engine) -> None:
    with pytest.raises(PolicyError, match="--network host is not allowed"):
        create(net, "true", network="host")


@pytest.mark.parametrize(
    ("publish", "role", "error", "message"),
    [
        (["127.0.0.1:HELD:80"], None, InvalidInputError, "is already published"),
        (["127.0.0.1:HOST:80"], None, InvalidInputError, "is in use on this host"),
        (["0.0.0.0:18000:80"], None, PolicyError, "publishing on 0.0.0.0 is not allowed"),
        (["127.0.0.1:80:80"], LEARNER, PolicyError, "host port 80 is privileged"),
        (["127.0.0.1:18000:80"], LEARNER, PolicyError, "outside the allowed range 20000-29999"),
        (["80-90:80-90"], None, InvalidInputError, "not a range"),
        (["127.0.0.1:70000:80"], None, InvalidInputError, "ports are 1 to 65535"),
        (["1:1", "2:2", "3:3", "4:4", "5:5", "6:6"], LEARNER, PolicyError, "at most 5"),
    ],
)
def test_bad_ports_are_refused_before_anything_is_made(
    net: Engine, publish: list[str], role: str | None, error: type[Exception], message: str
) -> None:
    held_port, host_port = free_port(), None
    holder = create(net, "true", publish=[f"127.0.0.1:{held_port}:80"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    host_port = listener.getsockname()[1]
    publish = [p.replace("HELD", str(held_port)).replace("HOST", str(host_port)) for p in publish]
    if role == LEARNER and message == "at most 5":
        publish = [f"127.0.0.1:{20000 + i}:{80 + i}" for i in range(6)]
    try:
        before = [r.id for r in net.get(Containers).list()]
        with pytest.raises(error) as err:
            create(net, "true", role=role, publish=publish)
        assert message in str(err.value)
        assert [r.id for r in net.get(Containers).list()] == before
        assert leases(net) == [f"ports/tcp-{held_port}"] and holder in before
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("dns", "message"),
    [
        (["evil.example"], "--dns 'evil.example': an IPv4 address"),
        (["999.1.1.1"], "--dns '999.1.1.1': an IPv4 address"),
        (["1.1.1.1\nnameserver 6.6.6.6"], "an IPv4 address"),  # no line of its own
        (["1.1.1.1"] * 4, "dns"),
    ],
)
def test_bad_dns_servers_are_refused_before_anything_is_made(
    net: Engine, dns: list[str], message: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        create(net, "true", dns=dns)
    assert message in err.value.message
    assert net.get(Containers).list() == []


def test_dns_servers_given_are_the_containers_resolvers(net: Engine) -> None:
    cid = create(net, "sleep", "600", dns=["10.91.0.53"])
    start(net, cid)
    assert run(net, cid, "cat", "/etc/resolv.conf").splitlines()[-1] == "nameserver 10.91.0.53"


def test_an_unknown_network_is_refused(net: Engine) -> None:
    with pytest.raises(NotFoundError, match="network nosuch not found"):
        create(net, "true", network="nosuch")
    assert net.get(Containers).list() == []


def test_create_start_kill_rm_cycles_leave_nothing_behind(net: Engine) -> None:
    """Namespaces, veths, bridge ports, iptables rules, aardvark entries, address leases and
    port reservations: none left after 100 cycles (each with a published port), two
    running at once."""
    keep = create(net, "sleep", "600", name="keep")  # the bridge and aardvark stay up meanwhile
    start(net, keep)
    census, rules, nics = Census.take(net), firewall(), links()
    lifecycle = net.get(Lifecycle)

    def cycles(first: int) -> None:
        for i in range(first, first + 50):
            cid = create(net, "sleep", "600", publish=[f"127.0.0.1::{8000 + i}"])
            lifecycle.start(cid)
            lifecycle.kill(cid, "KILL")
            lifecycle.containers.remove(cid, force=True)

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # two at a time: the leases and locks are shared
        for done in [pool.submit(cycles, 0), pool.submit(cycles, 50)]:
            done.result()
    took = time.monotonic() - started
    no_leaks(net, census)
    assert firewall() == rules and links() == nics
    assert aardvark_entries(net) == [e for e in aardvark_entries(net) if keep in e]
    assert leases(net) == [f"ipam/gtest/{_address(net, 'keep')}"]
    assert took < 100, f"100 cycles took {took:.1f} s"
    lifecycle.containers.remove(keep, force=True)
    assert netns.ours() == [n for n in netns.ours() if not n.startswith(netns.name_of(keep))]
    assert firewall() == [] or all("gtest" not in r and "10.91.0." not in r for r in firewall())
    assert "gt0" not in links() and aardvark_entries(net) == [] and leases(net) == []


def _address(engine: Engine, name: str) -> str:
    shown = invoke(Context(engine), verbs.CONTAINER_INSPECT, verbs.Id(id=name))
    return str(shown["NetworkSettings"]["IPAddress"])


def test_a_failed_setup_is_undone_and_the_start_says_why(
    net: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """netavark refusing (here a stand-in that prints netavark's error document) fails the
    start with its words; no namespace, lease or state file stays, and a teardown of what was
    never set up is not attempted twice."""
    from engine.network import attach, netavark

    fake = tmp_path / "netavark"
    fake.write_text('#!/bin/sh\necho \'{"error": "IO error: bridge gt0 is on fire"}\'\nexit 1\n')
    fake.chmod(0o755)
    cid = create(net, "sleep", "600", publish=[f"127.0.0.1:{free_port()}:80"])
    monkeypatch.setattr(netavark, "NETAVARK", str(fake))
    census = Census.take(net)
    with pytest.raises(EngineError, match="netavark setup: IO error: bridge gt0 is on fire"):
        start(net, cid)
    record = net.get(Containers).get(cid)
    assert record.state == "configured" and "on fire" in record.error
    userdata = net.get(Containers).paths(cid).userdata
    assert attach.state_of(userdata) is None and not netns.path_of(cid).exists()
    assert [lease for lease in leases(net) if lease.startswith("ipam/")] == []
    assert not attach.disconnect(net.get(Networks), cid, userdata)  # nothing to tear down
    no_leaks(net, census)
    monkeypatch.undo()
    start(net, cid)  # the real one works afterwards
    assert netns.path_of(cid).exists()


def test_a_bridge_name_that_is_a_host_interface_is_refused(net: Engine) -> None:
    """netavark would enslave veths to it: eth0 or lo as a network's bridge is refused, for
    a new network and for the default one from engine.json."""
    with pytest.raises(InvalidInputError, match="an interface named lo already exists"):
        invoke(Context(net), verbs.NETWORK_CREATE, verbs.CreateNetwork(name="x", bridge="lo"))
    broken = Engine(EngineConfig(root=net.config.root, network={**TEST_NETWORK, "bridge": "lo"}))
    cid = create(broken, "true")
    with pytest.raises(InvalidInputError, match="lo is an interface of this host, not a bridge"):
        broken.get(Lifecycle).start(cid)
    assert not netns.path_of(cid).exists()
    broken.get(Lifecycle).containers.remove(cid)


def test_dns_files_from_before_a_reboot_are_forgotten_at_engine_start(net: Engine) -> None:
    from engine.network import attach

    directory = attach.config_dir(Path(net.config.root)) / "aardvark-dns"
    directory.mkdir(parents=True, exist_ok=True)
    stale, fresh = directory / "aardvark.pid", directory / "gtest"
    stale.write_text("4242")
    fresh.write_text("10.91.0.1\n")
    booted = attach.boot_time()
    os.utime(stale, (booted - 60, booted - 60))
    net.get(Lifecycle).reconcile()
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize(
    "edit",
    ["other", "host", "pathless"],
)
def test_a_spec_cannot_take_another_network_namespace_or_the_hosts(net: Engine, edit: str) -> None:
    """config.json's network namespace is the engine's: joining another container's (or
    PID 1's), dropping the entry (the host's network) or dropping its path is refused on
    save, with the rule and the field named."""
    other = create(net, "sleep", "600", network="bridge")
    mine = create(net, "sleep", "600", network="bridge")
    ctx = Context(net)
    invoke(ctx, verbs.SPEC_GENERATE, verbs.Id(id=mine))
    spec = invoke(ctx, verbs.SPEC_GET, verbs.Id(id=mine))
    doc = json.loads(spec["text"])
    entries = doc["linux"]["namespaces"]
    [i] = [n for n, e in enumerate(entries) if e["type"] == "network"]
    assert entries[i] == {"type": "network", "path": str(netns.path_of(mine))}
    if edit == "other":
        entries[i]["path"] = str(netns.path_of(other))
        message = "joining an existing namespace is not allowed (the network's is"
    elif edit == "host":
        del entries[i]
        message = "the network namespace is required"
    else:
        del entries[i]["path"]
        message = "the network namespace is the engine's"
    with pytest.raises(EngineError) as err:
        invoke(ctx, verbs.SPEC_PUT, verbs.SpecText(id=mine, text=json.dumps(doc)))
    assert message in str(err.value.details) or message in err.value.message


def test_a_lease_without_a_state_file_is_given_back_at_teardown(net: Engine) -> None:
    """A start cut off between taking its address and writing its state (engine killed):
    the container's next teardown (its rm here) gives the address back."""
    from engine.network import attach, ipam

    cid = create(net, "true")
    root = Path(net.config.root)
    address = ipam.allocate(root, net.get(Networks).default, cid)
    assert ipam.leases(root, "gtest") == {address: cid}
    net.get(Lifecycle).containers.remove(cid)
    assert ipam.leases(root, "gtest") == {}
    assert not attach.disconnect(net.get(Networks), cid, tmp_userdata(net))


def tmp_userdata(engine: Engine) -> Path:
    path = Path(engine.config.root) / "nowhere"
    path.mkdir(exist_ok=True)
    return path
