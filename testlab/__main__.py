"""python3 -m testlab: the lab from the command line (see __init__.py)."""

import argparse
import os
from pathlib import Path

from . import cluster, hosts, vagrant, vm


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m testlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("cluster-up", help="boot a cluster file's nodes; print the ssh-block cluster file")
    up.add_argument("cluster_file", nargs="?", type=Path,
                    default=Path(os.environ.get("SORTD_CLUSTER") or hosts.PROJECT / "cluster.json"))
    sub.add_parser("cluster-status", help="the nodes of the running cluster lab, one line each")
    down = sub.add_parser("down", help="remove a lab and everything it started (default: the cluster lab)")
    down.add_argument("lab", nargs="?", default=cluster.CLUSTER_LAB)
    roots = sub.add_parser("rootfs", help="build the cached root filesystem of the test hosts")
    roots.add_argument("--emulated", action="store_true",
                       help="those of the emulated (VM) hosts instead: each suite's, for each architecture")
    sub.add_parser("box", help="build (once) and add the libvirt box of the Vagrant lab; print its name")
    proxy = sub.add_parser("apt-proxy", help="start the labs' apt-cacher-ng in the background, unless one "
                                             "runs; print its PID (the caller stops it)")
    proxy.add_argument("log_file", type=Path)
    args = parser.parse_args()
    if args.command == "cluster-up":
        booting = cluster.cluster_lab(args.cluster_file)
        booting.lab.__enter__()  # left running on purpose: `down` removes it
        try:
            print(booting.up())
        except BaseException:
            booting.lab.down()
            raise
    elif args.command == "cluster-status":
        lines = cluster.status()
        print("\n".join(lines) if lines else "no local cluster is up")
    elif args.command == "down":
        hosts.down(args.lab)
    elif args.command == "apt-proxy":
        pid = hosts.start_apt_proxy(args.log_file)
        print(pid or "")
    elif args.command == "rootfs" and args.emulated:
        for arch in vm.MACHINES:
            for suite in hosts.SUITES:
                print(hosts.rootfs(suite, arch), flush=True)
    elif args.command == "rootfs":
        print(hosts.rootfs())
    else:
        print(vagrant.box(vagrant.VagrantLab().apt_proxy))  # the address the lab will give it


if __name__ == "__main__":
    main()
