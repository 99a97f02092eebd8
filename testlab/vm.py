"""Test hosts of another architecture (arm64): virtual machines under
qemu-system's software emulation (TCG), on the lab's bridge like the
systemd-nspawn hosts, and reached the way those are.

An nspawn container of another architecture (its programs run by qemu-user
through binfmt_misc) was tried first: systemd 257 boots there but cannot set
up its units' mount namespaces (226/NAMESPACE for systemd-networkd, logind,
and any unit with ProtectSystem=, sortd's included). A VM has its own kernel,
so the unit's sandboxing is the kernel's, as on an arm64 cloud host.

The VM's disk is an ext4 image made (mke2fs -d) from the host's overlay
root, which the lab prepared as for a container: same users, keys, address
and apt proxy. qemu starts Debian's arm64 kernel and initramfs from that
root, with a tap device on the lab's bridge. Commands run over SSH, as root
through the `vagrant` user's sudo, on one shared connection.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hosts import HostSpec

# Debian architecture -> qemu-system binary, its machine, CPU and kernel package.
MACHINES = {
    "arm64": {"qemu": "qemu-system-aarch64", "machine": "virt", "cpu": "cortex-a72",
              "kernel": "linux-image-arm64", "console": "ttyAMA0"},
}
MEMORY_MIB = 1536
# Booting under emulation, on a busy 2-core machine.
BOOT_SECONDS = 900
DISK_SIZE = "6G"
# The VM's only NIC, named eth0 (net.ifnames=0), on the lab's bridge.
INTERFACE = "eth0"


# The initramfs needs only what mounts the root: the virtio disk and ext4.
# Its default (MODULES=most) copies hundreds of modules, one emulated `cp`
# each: over 10 minutes when the root is built.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic", "libcrc32c"]


def vm_packages(arch: str) -> list[str]:
    """What a VM's root needs beyond a container's: a kernel and an initramfs."""
    return [MACHINES[arch]["kernel"], "initramfs-tools"]


def mmdebstrap_options() -> list[str]:
    """mmdebstrap options for a VM's root: a small initramfs, configured
    before the kernel's package makes it."""
    modules = "\\n".join(INITRAMFS_MODULES)
    return [
        '--essential-hook=mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"'
        ' && echo MODULES=list > "$1/etc/initramfs-tools/conf.d/lab-vm"'
        f' && printf "{modules}\\n" > "$1/usr/share/initramfs-tools/modules.d/lab-vm"',
    ]


def skip_man_db_updates(root: Path) -> None:
    """man-db's trigger rebuilds its index after every dpkg run that brings
    man pages (debconf's man-db/auto-update, kept as this file): under
    emulation, over a third of an nginx install's time and of its purge.
    Nothing tested reads the index (a man page is found by its path), so
    emulated hosts (these VMs, Vagrant's) skip it."""
    (root / "var/lib/man-db/auto-update").unlink(missing_ok=True)


def disk_image(root: Path, image: Path) -> None:
    """An ext4 image of `root` (ownership, modes and links kept), sparse."""
    image.unlink(missing_ok=True)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(root), str(image), DISK_SIZE],
                   check=True, stdout=subprocess.DEVNULL)


def tap_name(spec: HostSpec) -> str:
    return f"tap-{spec.name}"[:15]


def qemu_command(spec: HostSpec, root: Path, image: Path, cpus: int = 2) -> list[str]:
    """qemu-system for the host: Debian's kernel and initramfs from its root
    (the /vmlinuz and /initrd.img links), its disk, a NIC on the tap device."""
    machine = MACHINES[spec.arch]
    mac = "52:54:00:%02x:%02x:%02x" % tuple(int(part) for part in spec.ip.split(".")[1:])
    return [
        machine["qemu"], "-machine", machine["machine"], "-cpu", machine["cpu"], "-smp", str(cpus),
        "-m", str(MEMORY_MIB), "-nographic", "-no-reboot",
        "-kernel", str((root / "vmlinuz").resolve()), "-initrd", str((root / "initrd.img").resolve()),
        "-append", f"root=/dev/vda rw console={machine['console']} net.ifnames=0 quiet",
        "-drive", f"file={image},if=virtio,format=raw,cache=unsafe",
        "-netdev", f"tap,id=net0,ifname={tap_name(spec)},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
    ]


def ssh_command(spec: HostSpec, key: Path, known_hosts: Path, control: Path, netns: str) -> list[str]:
    """ssh to the host's `vagrant` user from inside the lab, on one shared
    connection (a new one costs seconds under emulation)."""
    return ["nsenter", f"--net=/run/netns/{netns}", "ssh", "-q", "-i", str(key),
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=300",
            f"vagrant@{spec.ip}"]
