"""Container networks, driven as podman drives them: netavark makes the bridge, the veth pair,
the addresses and the firewall rules in a network namespace the engine creates, aardvark-dns
answers names. The engine keeps what netavark does not (1.4 has no IPAM): the networks'
definitions, each container's address and its published host ports.

    networks.py   a network's definition: name and subnet checks, the default (engine.json),
                  the host's routes, addresses and DNS servers a subnet must not overlap
    store.py      Networks: create, list, inspect, remove (<root>/networks/<name>.json)
    ports.py      -p parsing and host-port reservations (<root>/networks/ports/)
    ipam.py       one address per container and network (<root>/networks/ipam/)
    netns.py      the container's network namespace, /run/netns/gantry-<id>
    netavark.py   netavark setup/teardown: the options JSON in, the status block out
    attach.py     a container's network, set up before runc create and torn down once
"""
