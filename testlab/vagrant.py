"""Real `vagrant up` on this machine: vagrant-libvirt, qemu in software
emulation, and a Debian 13 "trixie" box built here from Debian's packages.

A `VagrantLab` is a test-host `Lab` (its own network namespace, apt through
our apt-cacher-ng, cleanup by PID on exit or by `down`) that also runs
`virtlogd` and `libvirtd` inside that namespace and inside a mount namespace
of their own, in which /etc/libvirt, /var/lib/libvirt, /run/libvirt and
/var/log/libvirt are the lab's folders. So the domains, volumes and networks
that Vagrant makes exist only in the lab, nothing of this machine's libvirt
configuration changes, and a lab's end takes all of it away. `vagrant` runs
in the same namespaces; the cluster file's forwarded ports (which
vagrant-libvirt opens as SSH tunnels inside the namespace) are bridged to
this machine's 127.0.0.1 with socat.

    python3 -m testlab box              # build (once) and add the box; prints its name
    python3 -m testlab down vagrant     # remove a lab a killed run left behind
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .hosts import (APT_PROXY_PORT, CACHE, DEFAULT_SUITE, PACKAGES, PROJECT, Lab, authorize_vagrant_key,
                    cached_rootfs, log, run, wait_until)
from .vm import skip_man_db_updates

LAB = "vagrant"
SUBNET = "10.232.0"  # the lab's own bridge; guests reach its gateway by their default route
# The Debian cloud kernel: half the size of the generic one and ~25% faster to
# boot under emulation; it has the virtio drivers.
BOX_PACKAGES = [*PACKAGES, "linux-image-cloud-amd64"]
BOX_FORMAT = "v3"  # bump when the box's own files below change
BOX_VERSION = "1.0.0"
BOX_DISK_GB = 8
VAGRANT_HOME = CACHE / "vagrant.d"  # boxes added here, not to ~/.vagrant.d
# libvirt settings for a root-run libvirtd without systemd:
# without user/group root, libvirt cannot open /dev/kvm, decides KVM vanished
# and probes qemu again on every call (4-8 s each).
QEMU_CONF = 'user = "root"\ngroup = "root"\ncgroup_controllers = [ ]\nsecurity_driver = "none"\n'
PROGRESS = re.compile(r"^(\x1b\[K)?Progress: \d+%")
LIBVIRT_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/run/libvirt", "/var/log/libvirt")

# The box's own Vagrantfile: qemu without KVM (KVM does not work on these
# machines), the kernel booted directly (the image has no boot loader), no
# graphics.
BOX_VAGRANTFILE = """\
# Debian box for vagrant-libvirt built by sortd's testlab/vagrant.py.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
    libvirt.kernel = File.join(__dir__, "vmlinuz")
    libvirt.initrd = File.join(__dir__, "initrd.img")
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    libvirt.graphics_type = "none"
    libvirt.video_type = "none"
  end
end
"""


def vagrant_insecure_key() -> Path:
    """The public half of Vagrant's well-known key, which public boxes trust
    until `vagrant up` replaces it with a key of the machine's own."""
    found = sorted(glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub"))
    if not found:
        raise FileNotFoundError("Vagrant's keys/vagrant.pub: is the vagrant package installed?")
    return Path(found[-1])


def box(apt_proxy: str | None = None) -> str:
    """Builds the libvirt box once (cached) and adds it to VAGRANT_HOME;
    returns its name for SORTD_BOX. `apt_proxy` is written to the box's apt
    configuration (its VMs reach Debian's archive only through it)."""
    key = hashlib.sha256(json.dumps([BOX_PACKAGES, apt_proxy, BOX_FORMAT]).encode()).hexdigest()[:12]
    name = f"sortd-test/{DEFAULT_SUITE}-{key}"
    box_file = CACHE / f"sortd-{DEFAULT_SUITE}-{key}.box"
    if not box_file.exists():
        for stale in [*CACHE.glob("sortd-*-*.box"), *CACHE.glob("sortd-*-*.json")]:
            stale.unlink()
        _build_box(box_file, apt_proxy)
    listed = vagrant(["box", "list", "--machine-readable"], capture_output=True, text=True).stdout
    boxes, current = set(), ""
    for fields in (line.split(",")[2:4] for line in listed.splitlines()):
        if fields[0] == "box-name":
            current = fields[1]
        elif fields[0] == "box-version":
            boxes.add((current, fields[1]))
    for stale_name, stale_version in boxes - {(name, BOX_VERSION)}:
        if stale_name.startswith("sortd-test/"):  # earlier builds of ours
            vagrant(["box", "remove", "--force", "--provider", "libvirt", "--box-version", stale_version,
                     stale_name], stdout=subprocess.DEVNULL)
    if (name, BOX_VERSION) not in boxes:
        started = time.monotonic()
        # Added through a catalog, as from a box server, so the box has a
        # version and Vagrant need not watch its timestamp.
        catalog = box_file.with_suffix(".json")
        catalog.write_text(json.dumps({"name": name, "versions": [{"version": BOX_VERSION, "providers": [
            {"name": "libvirt", "url": box_file.as_uri()}]}]}))
        vagrant(["box", "add", "--force", str(catalog)], stdout=subprocess.DEVNULL)
        log(f"box {name} added in {time.monotonic() - started:.0f}s")
    return name


def _build_box(box_file: Path, apt_proxy: str | None) -> None:
    started = time.monotonic()
    root = cached_rootfs("box", BOX_PACKAGES)
    try:
        authorize_vagrant_key(root, vagrant_insecure_key())
        (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
        (root / "etc/hostname").write_text("debian\n")
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 debian\n::1 localhost\n")
        # Every clone makes its own machine ID at first boot (DHCP client IDs
        # derive from it), without systemd-firstboot asking on the console.
        (root / "etc/machine-id").write_text("uninitialized\n")
        skip_man_db_updates(root)
        run(["chroot", str(root), "systemctl", "mask", "systemd-firstboot.service"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The first interface is Vagrant's management network; Vagrant
        # configures the others with systemd-networkd itself.
        (root / "etc/systemd/network/10-eth0.network").write_text(
            "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n")
        # Host keys are made at first boot, so no two VMs share them.
        dropin = root / "etc/systemd/system/ssh.service.d/host-keys.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\n"
                          "ExecStartPre=/usr/sbin/sshd -t\n")
        if apt_proxy:
            (root / "etc/apt/apt.conf.d/01proxy").write_text(
                f'Acquire::http::Proxy "{apt_proxy}";\nAcquire::Retries "5";\n')
        with tempfile.TemporaryDirectory(dir=CACHE) as work:
            out = Path(work)
            shutil.copyfile(max(root.glob("boot/vmlinuz-*")), out / "vmlinuz")
            shutil.copyfile(max(root.glob("boot/initrd.img-*")), out / "initrd.img")
            raw = out / "root.raw"
            (root / ".complete").unlink()  # not part of the image
            run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw), f"{BOX_DISK_GB}G"])
            run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "box.img")])
            raw.unlink()
            (out / "metadata.json").write_text(json.dumps(
                {"provider": "libvirt", "format": "qcow2", "virtual_size": BOX_DISK_GB}))
            (out / "Vagrantfile").write_text(BOX_VAGRANTFILE)
            partial = box_file.with_suffix(".partial")
            run(["tar", "-cf", str(partial), "-C", str(out),
                 "metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd.img"])
            partial.rename(box_file)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the box is what is kept
    log(f"box {box_file.name} built in {time.monotonic() - started:.0f}s "
        f"({box_file.stat().st_size / 2**20:.0f} MiB)")


def vagrant_env(**extra: str) -> dict:
    """Vagrant's environment; `extra` may name another VAGRANT_CWD (a copy
    of the project) than this project."""
    # VAGRANT_CWD: nsenter --mount starts commands in /.
    return {**os.environ, "VAGRANT_HOME": str(VAGRANT_HOME), "VAGRANT_CWD": str(PROJECT),
            "VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_DEFAULT_PROVIDER": "libvirt", **extra}


def vagrant(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """`vagrant` on this machine (box commands need no libvirt)."""
    return run(["vagrant", *args], cwd=PROJECT, env=vagrant_env(), **kwargs)


class VagrantLab(Lab):
    """A Lab in which libvirtd runs, for `vagrant up --provider=libvirt`."""

    def __init__(self, name: str = LAB) -> None:
        super().__init__(name, subnet=SUBNET)
        self.holder = 0

    @property
    def apt_proxy(self) -> str:
        return f"http://{self.gateway}:{APT_PROXY_PORT}"

    def up(self) -> None:
        super().up()
        # One process holds the mount namespace; the daemons join it.
        holder = self.spawn(self.in_netns(["unshare", "--mount", "--propagation", "private",
                                           "sleep", "infinity"]))
        wait_until(lambda: _mount_ns(holder.pid) != _mount_ns(os.getpid()), 10, "libvirt mount namespace")
        self.holder = holder.pid
        state = self.data_dir / "libvirt"
        for directory in LIBVIRT_DIRS:
            private = state / directory.strip("/").replace("/", "-")
            if directory == "/etc/libvirt":
                # Without this machine's network definitions: the lab's
                # libvirt starts with nothing but what Vagrant makes.
                shutil.copytree(directory, private, symlinks=True,
                                ignore=lambda folder, names: names if folder.endswith("networks") else [])
                with open(private / "qemu.conf", "a") as conf:
                    conf.write("\n# sortd test lab\n" + QEMU_CONF)
            else:
                private.mkdir(parents=True)
            Path(directory).mkdir(parents=True, exist_ok=True)
            run(self.inside(["mount", "--bind", str(private), directory]))
        self.spawn(self.inside(["virtlogd"]), log_file=self.run_dir / "virtlogd.log")
        self.spawn(self.inside(["libvirtd"]), log_file=self.run_dir / "libvirtd.log")
        wait_until(lambda: self.virsh(["version"], check=False).returncode == 0, 60, "libvirtd")

    def inside(self, args: list[str]) -> list[str]:
        """A command in the lab's network and mount namespaces."""
        return ["nsenter", f"--target={self.holder}", "--net", "--mount", *args]

    def virsh(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return run(self.inside(["virsh", "--connect", "qemu:///system", "--quiet", *args]),
                   check=check, capture_output=True, text=True)

    def vagrant(self, args: list[str], env: dict, timeout: float = 1800) -> tuple[str, int]:
        """Runs vagrant inside the lab; returns its output and exit status.
        The output is also in the lab's run folder while it runs, and
        `self.timeline` holds when each line came (seconds from the start)."""
        log_file = self.run_dir / f"vagrant-{args[0]}.log"
        self.timeline: list[tuple[float, str]] = []
        started = time.monotonic()
        with open(log_file, "w") as out, subprocess.Popen(
                self.inside(["vagrant", *args]), env=vagrant_env(**env), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as process:
            deadline = threading.Timer(timeout, process.kill)  # also when it prints nothing
            deadline.start()
            try:
                for line in process.stdout:
                    if PROGRESS.match(line):  # the box upload's progress meter, a line per step
                        continue
                    self.timeline.append((time.monotonic() - started, line))
                    out.write(line)
                    out.flush()
            finally:
                deadline.cancel()
        if time.monotonic() - started >= timeout:
            raise TimeoutError(f"vagrant {' '.join(args)}: killed after {timeout:.0f}s; see {log_file}")
        return "".join(line for _, line in self.timeline), process.returncode

    def when(self, text: str) -> float:
        """Seconds into the last vagrant command when a line with `text` came."""
        return next(t for t, line in self.timeline if text in line)

    def expose(self, port: int, host_ip: str = "127.0.0.1", host_port: int | None = None) -> None:
        """Bridges host_ip:host_port (by default the same port) on this
        machine to 127.0.0.1:port in the lab."""
        self.bridge(f"lo-{port}", host_ip, host_port or port, "127.0.0.1", port)

    def vm_cpu_seconds(self) -> float:
        """CPU time the lab's VMs (libvirt's qemu processes) have used so
        far: libvirtd's children, so no cgroup of the lab counts them."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = 0.0
        for pid, _ in self.processes(("qemu",)):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return used

    def processes(self, names: tuple[str, ...]) -> list[tuple[str, str]]:
        """(PID, command name) of the lab's processes whose name starts with one of `names`."""
        found = []
        for pid in run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(names):
                found.append((pid, comm))
        return found

    def leftovers(self) -> dict[str, list[str]]:
        """What libvirt still has: domains, volumes, networks, and qemu,
        dnsmasq or SSH tunnel processes in the lab."""
        found = {
            "domains": self.virsh(["list", "--all", "--name"]).stdout.split(),
            "networks": self.virsh(["net-list", "--all", "--name"]).stdout.split(),
            "volumes": [],
            "processes": [f"{pid} {comm}" for pid, comm in self.processes(("qemu", "dnsmasq", "ssh"))],
        }
        for pool in self.virsh(["pool-list", "--all", "--name"]).stdout.split():
            found["volumes"] += [line.split()[0] for line in
                                 self.virsh(["vol-list", pool]).stdout.splitlines() if line.strip()]
        return found


def _mount_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""
