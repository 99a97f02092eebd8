"""A cluster file's nodes as test hosts, and the cluster file that reaches them.

The Vagrant nodes of a cluster file (those without an `ssh` block, as
inventory.py reads them) boot as test hosts in one lab: each at its first
private address, with its forwarded ports on this machine, on the Debian
suite its box names (debian/bookworm64: bookworm; trixie by default). The lab then
writes a second cluster file that describes the same nodes the way a user
describes cloud hosts, with `ssh` blocks (127.0.0.1 at the forwarded SSH port,
user `vagrant`, the lab's key, a known_hosts file with the hosts' keys), so
`SORTD_CLUSTER=<that file> ansible-playbook ansible/playbook.yaml` deploys to
them exactly as to cloud hosts, with the source file's settings.

With a bastion, the lab is a cloud's private subnet: only the bastion's SSH
is forwarded, and the other nodes are reached through it (`jump`) at their
lab addresses, which this machine has no route to.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import inventory

from .hosts import DEFAULT_SUITE, NATIVE_ARCH, Forward, HostSpec, Lab, listening, suite_of

CLUSTER_LAB = "cluster"
DEFAULT_SUBNET = "10.231.0"


def vagrant_nodes(cluster_file: Path) -> list[dict]:
    """The nodes of a cluster file that Vagrant (or a lab) brings up, as
    inventory.py reads and checks them: those without an `ssh` block."""
    return [node for node in inventory.load_cluster(cluster_file) if "ssh" not in node]


def node_suite(node: dict) -> str:
    """The Debian suite of a cluster file's node, from the Vagrant box it
    names (or $SORTD_BOX, as the Vagrantfile reads it): debian/bookworm64 ->
    bookworm; the lab's default suite for the Vagrantfile's default box."""
    return suite_of(node.get("box") or os.environ.get("SORTD_BOX") or DEFAULT_SUITE)


def node_forwards(node: dict) -> list[Forward]:
    """A cluster file node's port_mappings (host_ip defaults to 127.0.0.1)."""
    return [Forward(m["host_port"], m["guest_port"], m.get("host_ip", "127.0.0.1"), m.get("guest_ip"))
            for m in node.get("port_mappings", [])]


@dataclass
class ClusterLab:
    """A lab for the Vagrant nodes of a cluster file; `up` boots them and
    writes `cluster_file`, the ssh-block description of the booted hosts."""

    source: Path
    lab: Lab
    specs: list[HostSpec]
    nodes: list[dict]
    bastion: str | None = None

    @property
    def cluster_file(self) -> Path:
        return self.lab.data_dir / "cluster.json"

    @property
    def known_hosts(self) -> Path:
        return self.lab.data_dir / "known_hosts"

    def up(self) -> Path:
        hosts = self.lab.boot_all(self.specs)
        ssh_ports = {node["host_name"]: next(m["host_port"] for m in node["port_mappings"]
                                             if m["guest_port"] == 22) for node in self.nodes}
        behind = {host.name for host in hosts if self.bastion not in (None, host.name)}
        self.known_hosts.write_text("".join(
            f"{host.ip if host.name in behind else f'[127.0.0.1]:{ssh_ports[host.name]}'} {host.host_key}\n"
            for host in hosts))
        cluster = {"nodes": [{
            "host_name": host.name,
            "groups": node["groups"],
            "ssh": {"host": host.ip, "port": 22, "jump": self.bastion} if host.name in behind
            else {"host": "127.0.0.1", "port": ssh_ports[host.name]},
        } for host, node in zip(hosts, self.nodes)]}
        for host, node in zip(hosts, cluster["nodes"]):
            node["ssh"].update(user="vagrant", key=str(host.key), known_hosts=str(self.known_hosts),
                               private_ip=host.ip)
        settings = inventory.load_settings(self.source)
        if settings:  # the environment's, as its file has them
            cluster["settings"] = settings
        secrets = inventory.secrets_file(self.source)
        if secrets is not None:  # the same file, wherever this one is
            cluster["secrets"] = str(secrets)
        self.cluster_file.write_text(json.dumps(cluster, indent=2) + "\n")
        (self.lab.data_dir / "source").write_text(f"{self.source.resolve()}\n")
        return self.cluster_file


def cluster_lab(source: Path, name: str = CLUSTER_LAB, archs: dict[str, str] | None = None,
                bastion: str | None = None) -> ClusterLab:
    """A lab and host specs for the Vagrant nodes of a cluster file. Nodes
    without a private address get one on the lab's subnet. `archs` makes
    some nodes hosts of another architecture (VMs under emulation), as cloud
    hosts may be; a Vagrant box has the laptop's. With a `bastion` (a node's
    name), the other nodes' SSH is not forwarded: they are reached through it."""
    nodes = vagrant_nodes(source)
    archs = archs or {}
    addresses = [node["network_configs"][0]["ip"] for node in nodes if node.get("network_configs")]
    subnet = addresses[0].rsplit(".", 1)[0] if addresses else DEFAULT_SUBNET
    specs = [HostSpec(name=node["host_name"],
                      ip=(node.get("network_configs") or [{"ip": f"{subnet}.{101 + index}"}])[0]["ip"],
                      forwards=[forward for forward in node_forwards(node)
                                if forward.guest_port != 22 or bastion in (None, node["host_name"])],
                      suite=node_suite(node),
                      arch=archs.get(node["host_name"], NATIVE_ARCH))
             for index, node in enumerate(nodes)]
    return ClusterLab(source, Lab(name, subnet=subnet), specs, nodes, bastion)


def status(name: str = CLUSTER_LAB) -> list[str]:
    """One line per node of a running cluster lab: its address, its forwarded
    ports and whether each answers, and the version /healthz answers through
    the node's port 80, where that is forwarded. Empty when the lab is down."""
    lab = Lab(name)
    source = lab.data_dir / "source"
    if not source.exists():
        return []
    lines = []
    for node in vagrant_nodes(Path(source.read_text().strip())):
        ports = []
        health = ""
        for forward in node_forwards(node):
            state = "open" if listening(forward.host_port, forward.host_ip) else "closed"
            ports.append(f"{forward.host_ip}:{forward.host_port}->{forward.guest_port} {state}")
            if forward.guest_port == 80:
                health = "; /healthz: " + _health(f"http://{forward.host_ip}:{forward.host_port}/healthz")
        lines.append(f"{node['host_name']} [{', '.join(node['groups'])}] {', '.join(ports)}{health}")
    return lines


def _health(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            health = json.loads(answer.read())
            # A node names its build in a header (a load balancer hides it).
            return f"{health.get('status')}, version {answer.headers.get('X-Sortd-Version', '-')}"
    except (OSError, ValueError) as error:
        return f"no answer ({error})"
