"""The test-host lab: real Debian machines on this machine, for the tests and
for `scripts/local-cluster`.

- `hosts`: `Lab`, a network namespace with a bridge and an apt proxy, in
  which `HostSpec`s boot as systemd-nspawn containers with systemd as PID 1
  (`Host`); everything a lab starts is removed when it ends.
- `cluster`: the nodes of a cluster file as such hosts (`cluster_lab`), and
  the ssh-block cluster file that reaches them, as cloud hosts are reached.
- `vagrant`: `VagrantLab`, libvirt inside a lab, and a Debian box built
  here, for a real `vagrant up`.
- `load`: a bounded HTTP load loop (standard library only, so it also runs
  inside a host).

Command line: `python3 -m testlab --help`.
"""

from .cluster import ClusterLab, cluster_lab, node_forwards, vagrant_nodes
from .hosts import Forward, Host, HostSpec, Lab, down, free_port, listening

__all__ = ["ClusterLab", "Forward", "Host", "HostSpec", "Lab", "cluster_lab", "down", "free_port",
           "listening",
           "node_forwards", "vagrant_nodes"]
