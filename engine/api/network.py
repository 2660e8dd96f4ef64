"""network.* verbs, and the network part of container.create.

    network.create   {name, subnet?, gateway?, bridge?, internal?, dns?}  -> network (admins)
    network.list     {}                                                  -> [network]
    network.inspect  {name}                                              -> network + users
    network.remove   {name}                                              -> {name} (admins)
    container.network {id}                                               -> the Network tab

A network is ``podman network inspect``'s shape (name, id, driver, network_interface,
subnets, ipv6_enabled, internal, dns_enabled, ipam_options, created) and ``default``; inspect
adds the containers attached (name, id, address) and the firewall rules netavark made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.api.base import Context, op
from engine.errors import InvalidInputError, PolicyError
from engine.network import attach, ipam, ports
from engine.network.networks import HOST, NONE, Network
from engine.network.show import network_view
from engine.network.store import Networks
from engine.protocol import ADMIN, LEARNER, verbs
from engine.protocol.verbs import Json
from engine.runtime.lifecycle import Lifecycle
from engine.storage.containers import Containers
from engine.storage.records import ContainerRecord, PortMapping

DEFAULT_CHOICE = "bridge"


def _admin(ctx: Context, what: str) -> None:
    if ctx.role not in (None, "", ADMIN):
        raise PolicyError(f"only an admin may {what}")


def _policy(ctx: Context) -> dict[str, Any]:
    policy = ctx.engine.config.policy
    return policy if isinstance(policy, dict) else {}


def default_choice(policy: dict[str, Any]) -> str:
    """What a create without --network gets: policy.network.default, else the default
    bridge network."""
    network = policy.get("network") or {}
    value = network.get("default", DEFAULT_CHOICE) if isinstance(network, dict) else None
    return value if isinstance(value, str) and value else DEFAULT_CHOICE


def create_choice(ctx: Context, network: str, publish: list[str]) -> tuple[str, list[PortMapping]]:
    """A create's network and published ports, checked against the policy before anything
    is made: the network exists (host only for an admin the policy allows), the host
    addresses and ports are allowed, none is held by another container or a host process."""
    policy = _policy(ctx)
    allow_host = ctx.role in (None, "", ADMIN) and ports.allow_host_network(policy)
    networks = ctx.engine.get(Networks)
    choice = attach.check_choice(networks, network or default_choice(policy), allow_host)
    mappings = [ports.parse_publish(p) for p in publish]
    if mappings and choice in (NONE, HOST):
        raise InvalidInputError(f"-p needs a bridge network (this container's is {choice})")
    rules = ports.port_rules(policy, learner=ctx.role == LEARNER)
    mappings = ports.check_mappings(mappings, rules)
    held = ports.reservations(Path(ctx.engine.config.root))
    for m in mappings:
        if m.host_port and f"{m.protocol}-{m.host_port}" in held:
            raise InvalidInputError(f"host port {m.host_port}/{m.protocol} is already published")
    return choice, mappings


def reserve_ports(ctx: Context, record: ContainerRecord) -> ContainerRecord:
    """Take the created container's host ports (choosing the ones left open); a port taken
    meanwhile removes the container again and says so."""
    if not record.options.ports:
        return record
    containers = ctx.engine.get(Containers)
    rules = ports.port_rules(_policy(ctx), learner=ctx.role == LEARNER)
    root = Path(ctx.engine.config.root)
    try:
        taken = ports.reserve(root, record.id, record.options.sandbox, record.options.ports, rules)
    except BaseException:
        containers.remove(record.id, force=True)
        raise
    with containers.lock(record.id):
        record = containers.load(record.id)
        record.options.ports = taken
        containers.save(record)
    return record


def _users(ctx: Context, network: Network) -> list[dict[str, str]]:
    """The containers that name ``network`` (with their address when they run)."""
    leases = {
        cid: ip for ip, cid in ipam.leases(Path(ctx.engine.config.root), network.name).items()
    }
    out = []
    for record in ctx.engine.get(Containers).list():
        choice = record.options.network
        if choice == network.name or (network.default and choice == DEFAULT_CHOICE):
            out.append({"name": record.name, "id": record.id, "address": leases.get(record.id, "")})
    return out


@op(verbs.NETWORK_CREATE)
def create(ctx: Context, args: verbs.CreateNetwork) -> Json:
    _admin(ctx, "create a network")
    network = ctx.engine.get(Networks).create(
        args.name,
        subnet=args.subnet,
        gateway=args.gateway,
        bridge=args.bridge,
        internal=args.internal,
        dns=args.dns,
    )
    return network.to_json()


@op(verbs.NETWORK_LIST)
def list_(ctx: Context, args: verbs.NoArgs) -> list[Json]:
    out = []
    for network in ctx.engine.get(Networks).all():
        out.append({**network.to_json(), "containers": len(_users(ctx, network))})
    return out


@op(verbs.NETWORK_INSPECT)
def inspect(ctx: Context, args: verbs.NetworkName) -> Json:
    network = ctx.engine.get(Networks).get(args.name)
    return {**network.to_json(), "containers": _users(ctx, network)}


@op(verbs.NETWORK_REMOVE)
def remove(ctx: Context, args: verbs.NetworkName) -> Json:
    _admin(ctx, "remove a network")
    networks = ctx.engine.get(Networks)
    network = networks.get(args.name)
    networks.remove(network.name, [u["name"] for u in _users(ctx, network)])
    return {"name": network.name}


@op(verbs.CONTAINER_NETWORK)
def container_network(ctx: Context, args: verbs.Id) -> Json:
    containers = ctx.engine.get(Lifecycle).containers
    record = containers.synced(containers.get(args.id))
    choice = record.options.network
    network = None if choice in (NONE, HOST) else ctx.engine.get(Networks).get(choice)
    userdata = containers.paths(record.id).userdata
    root = Path(ctx.engine.config.root)
    return network_view(record, userdata, network, attach.config_dir(root))
