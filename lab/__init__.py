"""``switchboard lab``: several simulated Switchboard hosts on one machine, like ``kind``.

Each host is a network namespace with its own ovsdb-server, ovs-vswitchd, Consul agent and
``switchboard controller``, started by ``scripts/start-host.sh`` as on a real host; an
underlay namespace joins them through a Linux bridge."""
