"""Test hosts: real Debian machines (13 "trixie" by default, or 12 "bookworm")
with systemd as PID 1, on this machine.

Each host is a systemd-nspawn container booted from a shared mmdebstrap root
filesystem (an overlayfs per host), or, for another architecture (arm64), a
qemu-system VM whose disk is made from such a root (testlab/vm.py), on a bridge inside a network namespace
that a `Lab` creates and owns. Nothing leaves the namespace: apt goes through
an apt-cacher-ng of our own on the host's 127.0.0.1:3149, and a host's ports are forwarded
to 127.0.0.1 on this machine through socat pairs joined by unix sockets, as a
Vagrant VM's forwarded ports would be. Each host has sshd and a `vagrant` user
with passwordless sudo, like a Vagrant box.

A Lab is a context manager: leaving it, normally or by an exception, stops
everything it started, by PID, and removes its mounts, namespace and files.
Its state is also written under /run/sortd-testhosts/<lab>/, so a lab left
behind by a killed process is cleaned by the next `Lab` of the same name or by
`python3 -m testlab down LAB`.

    with Lab("pkg") as lab:
        host = lab.boot(HostSpec("web-01", "10.231.0.11", [Forward(8080, 80)]))
        host.run(["systemctl", "is-system-running"])
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from . import vm

PROJECT = Path(__file__).resolve().parent.parent
RUN = Path("/run/sortd-testhosts")
LAB_ROUTE_METRIC = 4000  # the labs' unreachable routes (Lab.up): 4000-4999
DATA = Path("/var/lib/sortd-testhosts")
CACHE = Path("/var/cache/sortd-testhosts")
APT_PROXY_PORT = 3142  # inside a lab: the gateway's port 3142, apt-cacher-ng's usual one
# On this machine our apt-cacher-ng listens on its own port, so a stock
# apt-cacher-ng already running on 3142 (with remap rules) is never used.
HOST_APT_PROXY_PORT = 3149
# The Debian suites a host can run: the first is the default (the current
# stable); the others stay tested while Debian supports them.
SUITES = ("trixie", "bookworm")
DEFAULT_SUITE = SUITES[0]
PACKAGES = [
    "systemd-sysv", "dbus", "openssh-server", "sudo", "python3", "python3-apt",
    "iproute2", "iputils-ping", "procps", "curl", "ca-certificates", "netbase",
    "nftables", "man-db",
]
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How a command runs inside a host: as root, in a clean environment.
ROOT_ENV = ["env", "-i", f"PATH={HOST_PATH}", "LANG=C.UTF-8", "HOME=/root"]
# This machine's Debian architecture: hosts of another one are VMs.
NATIVE_ARCH = "amd64"


@dataclass(frozen=True)
class Forward:
    """A guest port reachable on this machine at host_ip:host_port; at
    guest_ip, when that is not the host's own address (a floating one)."""

    host_port: int
    guest_port: int
    host_ip: str = "127.0.0.1"
    guest_ip: str | None = None


@dataclass(frozen=True)
class HostSpec:
    """What a test host is: its name, address on the lab bridge, forwarded
    ports, Debian suite and architecture."""

    name: str
    ip: str
    forwards: list[Forward] = field(default_factory=list)
    suite: str = DEFAULT_SUITE
    arch: str = NATIVE_ARCH

    @property
    def emulated(self) -> bool:
        return self.arch != NATIVE_ARCH


def log(message: str) -> None:
    """Progress, on stderr: stdout is for what a command answers."""
    print(f"testlab: {message}", file=sys.stderr, flush=True)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    return subprocess.run(args, **kwargs)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a host's forward."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f}s")


def rootfs(suite: str = DEFAULT_SUITE, arch: str = NATIVE_ARCH) -> Path:
    """The shared root filesystem of a suite's hosts, built once and cached;
    with a kernel for another architecture's (VM) hosts."""
    if arch == NATIVE_ARCH:
        return cached_rootfs("nspawn", PACKAGES, suite)
    return cached_rootfs("vm", PACKAGES + vm.vm_packages(arch), suite, arch, vm.mmdebstrap_options())


def suite_of(name: str) -> str:
    """The suite a Vagrant box's name or a suite's name names:
    debian/trixie64 -> trixie."""
    found = [suite for suite in SUITES if suite in name]
    if not found:
        raise ValueError(f"{name!r} names none of the Debian suites the lab boots: {', '.join(SUITES)}")
    return found[0]


def cached_rootfs(flavor: str, packages: list[str], suite: str = DEFAULT_SUITE,
                  arch: str = NATIVE_ARCH, options: list[str] | None = None) -> Path:
    """A root filesystem of a Debian suite and architecture with `packages`,
    a `vagrant` user with passwordless sudo, systemd-networkd and sshd
    enabled and no SSH host keys; built once per suite, architecture and
    package list and cached under CACHE. Another architecture's is built
    with its programs run by qemu-user (scripts/binfmt)."""
    suite = suite_of(suite)
    options = options or []
    foreign = [] if arch == NATIVE_ARCH else [arch]
    key = hashlib.sha256(" ".join([suite, *foreign, *packages, *options, "v2"]).encode()).hexdigest()[:12]
    name = "-".join(["rootfs", flavor, suite, *foreign])
    root = CACHE / f"{name}-{key}"
    if (root / ".complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    # One build of a root at a time, when streams of tests run side by side:
    # the second waits for the first's and uses it.
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / ".complete").exists():
            _build_rootfs(root, name, key, packages, suite, arch, options)
    return root


def _build_rootfs(root: Path, name: str, key: str, packages: list[str], suite: str, arch: str,
                  options: list[str]) -> None:
    foreign = [] if arch == NATIVE_ARCH else [arch]
    for stale in CACHE.glob(f"{name}-{'?' * len(key)}"):  # older package lists, or a killed build
        shutil.rmtree(stale, ignore_errors=True)
    started = time.monotonic()
    log(f"building {root} with mmdebstrap (a minute or more, once)")
    if foreign:
        run([str(PROJECT / "scripts/binfmt"), arch])
    run(["mmdebstrap", "--variant=apt", "--quiet", f"--architectures={arch}", *options,
         f"--include={','.join(packages)}", suite, str(root)])
    chroot = ["chroot", str(root)]
    run([*chroot, "useradd", "--create-home", "--shell", "/bin/bash", "vagrant"])
    (root / "etc/sudoers.d/vagrant").write_text("vagrant ALL=(ALL) NOPASSWD: ALL\n")
    (root / "etc/sudoers.d/vagrant").chmod(0o440)
    run([*chroot, "systemctl", "enable", "systemd-networkd", "ssh"], stdout=subprocess.DEVNULL)
    # No uplink: nothing to wait for, and a failed wait marks the boot degraded.
    run([*chroot, "systemctl", "mask", "systemd-networkd-wait-online.service"], stdout=subprocess.DEVNULL)
    # Host keys are made per host; the rootfs must not carry any.
    for key_file in (root / "etc/ssh").glob("ssh_host_*"):
        key_file.unlink()
    (root / ".complete").write_text(time.strftime("%F %T\n"))
    log(f"rootfs built in {time.monotonic() - started:.0f}s")


class Host:
    """A booted test host. `run` executes a command inside it as root; SSH
    reaches it as `vagrant` with `key`, and `host_key` is its sshd's key.
    `pid` is the process that runs it on this machine (systemd-nspawn)."""

    def __init__(self, spec: HostSpec, root: Path, leader: int, pid: int, key: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.ip = spec.ip
        self.root = root
        self.leader = leader
        self.pid = pid
        self.key = key

    @property
    def host_key(self) -> str:
        """sshd's public ed25519 key, as known_hosts wants it: 'TYPE KEY'."""
        return " ".join((self.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])

    def run(self, args: list[str], check: bool = True, timeout: float = 600,
            input: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(self.command(args), capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(
                f"on {self.name}: {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def command(self, args: list[str]) -> list[str]:
        """What runs `args` inside the host as root, from this machine."""
        return ["nsenter", "--target", str(self.leader), "--all", "--", *ROOT_ENV, *args]

    def sh(self, script: str, check: bool = True, timeout: float = 600) -> str:
        return self.run(["sh", "-ec", script], check=check, timeout=timeout).stdout

    def put(self, source: Path, dest: str) -> str:
        """Copies a file from this machine into the host (not under /tmp,
        which systemd mounts over inside)."""
        target = self.root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return dest


class VmHost(Host):
    """A booted VM test host (another architecture): `run` goes over SSH to
    `vagrant` and sudo; `pid` is qemu's."""

    def __init__(self, spec: HostSpec, root: Path, pid: int, key: Path, lab: "Lab") -> None:
        super().__init__(spec, root, leader=0, pid=pid, key=key)
        known_hosts = lab.run_dir / f"{spec.name}.known_hosts"
        known_hosts.write_text(f"{spec.ip} {self.host_key}\n")
        self.ssh = vm.ssh_command(spec, key, known_hosts, lab.run_dir / f"{spec.name}.ssh", lab.netns)

    def command(self, args: list[str]) -> list[str]:
        return [*self.ssh, shlex.join(["sudo", *ROOT_ENV, *args])]

    def put(self, source: Path, dest: str) -> str:
        with open(source, "rb") as data:
            subprocess.run(self.command(["sh", "-c", f"cat > {shlex.quote(dest)}"]),
                           stdin=data, check=True, timeout=600, capture_output=True)
        return dest


class Lab:
    """A network namespace with a bridge, the hosts booted on it, and every
    process, mount and file they need, all removed on exit."""

    def __init__(self, name: str, subnet: str = "10.231.0") -> None:
        self.name = name
        self.netns = f"sortd-{name}"
        self.subnet = subnet
        self.gateway = f"{subnet}.1"
        self.run_dir = RUN / name
        self.data_dir = DATA / name
        self.state_file = self.run_dir / "state.json"
        self.state: dict = {"pids": [], "mounts": [], "netns": None, "cgroups": []}
        self.hosts: dict[str, Host] = {}

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> "Lab":
        down(self.name)  # whatever a killed run of this lab left behind
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.save()
        run(["ip", "netns", "add", self.netns])
        self.state["netns"] = self.netns
        self.save()
        # This machine has no route into the lab, as a control machine has
        # none into a cloud's private subnet: a connection to a lab address
        # (a test's mistake, a jump host left out) fails here at once, and
        # never leaves for a real network that may use the same range.
        # Each lab its own metric: two labs on one subnet (the two streams of
        # scripts/run-tests) each keep their route while the other comes and goes.
        metric = LAB_ROUTE_METRIC + zlib.crc32(self.name.encode()) % 1000
        route = ["unreachable", f"{self.subnet}.0/24", "metric", str(metric)]
        if run(["ip", "route", "add", *route], check=False, stderr=subprocess.DEVNULL).returncode == 0:
            self.state["route"] = route
            self.save()
        for args in (["link", "set", "lo", "up"],
                     ["link", "add", "br0", "type", "bridge"],
                     ["addr", "add", f"{self.gateway}/24", "dev", "br0"],
                     ["link", "set", "br0", "up"]):
            run(["ip", "-n", self.netns, *args])
        self.ensure_apt_proxy()
        # apt inside the lab: gateway:3142 -> unix socket -> our apt-cacher-ng on this machine
        apt_socket = self.run_dir / "apt.sock"
        self.spawn(["socat", f"UNIX-LISTEN:{apt_socket},fork,unlink-early",
                    f"TCP:127.0.0.1:{HOST_APT_PROXY_PORT}"])
        wait_until(apt_socket.exists, 10, "apt proxy socket")
        self.spawn(self.in_netns(["socat", f"TCP-LISTEN:{APT_PROXY_PORT},bind={self.gateway},fork,reuseaddr",
                                  f"UNIX-CONNECT:{apt_socket}"]))

    def down(self) -> None:
        down(self.name)
        self.hosts.clear()

    # -- helpers -----------------------------------------------------------

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(self.state))

    def in_netns(self, args: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", *args]

    def spawn(self, args: list[str], cgroup: str | None = None, env: dict | None = None,
              log_file: Path | None = None) -> subprocess.Popen:
        """Starts a process this lab owns; its PID is recorded at once."""
        def join_cgroup() -> None:  # runs in the child, before exec
            for directory in cgroup_dirs(str(cgroup)):
                if directory.exists():
                    (directory / "cgroup.procs").write_text(str(os.getpid()))
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, preexec_fn=join_cgroup if cgroup else None,
                                   start_new_session=True)
        self.state["pids"].append(process.pid)
        self.save()
        return process

    def ensure_apt_proxy(self) -> None:
        """Our apt-cacher-ng on 127.0.0.1 only; started here, for this lab's
        life, if not running (scripts/run-tests starts one for all the labs
        of its streams: see start_apt_proxy)."""
        if listening(HOST_APT_PROXY_PORT):
            return
        self.spawn(apt_proxy_command(), log_file=self.run_dir / "apt-cacher-ng.log")
        wait_until(lambda: listening(HOST_APT_PROXY_PORT), 15, f"apt-cacher-ng on 127.0.0.1:{HOST_APT_PROXY_PORT}")

    # -- hosts -------------------------------------------------------------

    def boot(self, spec: HostSpec, timeout: float = 90) -> Host:
        """Boots one host and waits until systemd finished starting it."""
        return self.boot_all([spec], timeout)[0]

    def boot_all(self, specs: list[HostSpec], timeout: float = 90) -> list[Host]:
        started = time.monotonic()
        launched = [(spec, self._start(spec, self._prepare(spec, rootfs(spec.suite, spec.arch)))) for spec in specs]
        hosts = []
        for spec, (root, nspawn) in launched:
            host = self._await(spec, root, nspawn, timeout)
            for forward in spec.forwards:
                self._forward(spec, forward)
            hosts.append(host)
        log(f"{', '.join(s.name for s in specs)} up in {time.monotonic() - started:.1f}s")
        return hosts

    def stop_host(self, name: str, timeout: float = 60) -> None:
        """Powers a host off, as pulling its plug would look to the others;
        its disk (overlay) is kept for start_host."""
        host = self.hosts[name]
        host.run(["systemctl", "poweroff"], check=False)
        wait_until(lambda: not _alive(host.pid), timeout, f"{name} powered off")

    def cut_power(self, name: str, timeout: float = 30) -> None:
        """Powers a host off at once, as a pulled plug or a dead hypervisor
        would: its init (a VM's qemu) killed, nothing shut down, no goodbye
        on the network (its link goes first: the kernel would otherwise close
        its dying processes' connections, which a dead host never does). Its
        disk is kept for start_host."""
        host = self.hosts[name]
        self.set_link(name, False)
        os.kill(host.pid if host.spec.emulated else host.leader, signal.SIGKILL)
        wait_until(lambda: not _alive(host.pid), timeout, f"{name} powered off")
        if host.spec.emulated:
            return  # its tap device stays, for start_host
        link = self.link_of(name)  # gone with the container's network namespace
        wait_until(lambda: run(["ip", "-n", self.netns, "link", "show", link], check=False,
                               capture_output=True).returncode != 0, timeout, f"{link} gone")

    def set_link(self, name: str, up: bool) -> None:
        """Plugs a host's network cable in or out: its port on the lab's
        bridge up or down (the host sees its carrier come and go)."""
        run(["ip", "-n", self.netns, "link", "set", self.link_of(name), "up" if up else "down"])

    def link_of(self, name: str) -> str:
        """The host's port on the lab's bridge: nspawn's veth (vb-NAME), a VM's tap."""
        spec = self.hosts[name].spec
        return vm.tap_name(spec) if spec.emulated else f"vb-{name}"[:15]

    def start_host(self, name: str, timeout: float = 90) -> Host:
        """Boots a host stopped by stop_host again, with its disk as it was."""
        host = self.hosts[name]
        if host.spec.emulated:  # its tap, down since cut_power
            self.set_link(name, True)
        root, nspawn = self._start(host.spec, host.root)
        return self._await(host.spec, root, nspawn, timeout)

    def _prepare(self, spec: HostSpec, lower: Path) -> Path:
        """A fresh overlay root for the host, configured."""
        node = self.data_dir / spec.name
        shutil.rmtree(node, ignore_errors=True)
        upper, work, merged = node / "upper", node / "work", node / "root"
        for directory in (upper, work, merged):
            directory.mkdir(parents=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)])
        self.state["mounts"].append(str(merged))
        self.save()
        self._configure(spec, merged)
        if spec.emulated:
            vm.disk_image(merged, self.disk_of(spec.name))
            tap = vm.tap_name(spec)
            run(["ip", "-n", self.netns, "tuntap", "add", "dev", tap, "mode", "tap"])
            run(["ip", "-n", self.netns, "link", "set", tap, "master", "br0", "up"])
        return merged

    def disk_of(self, name: str) -> Path:
        """A VM host's disk image (kept from stop_host to start_host)."""
        return self.data_dir / name / "disk.img"

    def _start(self, spec: HostSpec, merged: Path) -> tuple[Path, subprocess.Popen]:
        cgroup = f"sortd-testhosts/{self.name}/{spec.name}"
        for directory in cgroup_dirs(cgroup):
            directory.mkdir(parents=True, exist_ok=True)
        if cgroup not in self.state["cgroups"]:
            self.state["cgroups"].append(cgroup)
        if spec.emulated:  # its disk and tap device made by _prepare
            qemu = self.spawn(self.in_netns(vm.qemu_command(spec, merged, self.disk_of(spec.name))),
                              cgroup=cgroup, log_file=self.run_dir / f"{spec.name}.console")
            return merged, qemu
        # nspawn picks the hierarchy this machine has: hybrid (systemd's own
        # tree on cgroup2, so BPF IP filters work; controllers on cgroup v1,
        # where memory and pids are). _delegate_controllers then lets the
        # host's systemd use them, so the units' MemoryMax and TasksMax hold.
        environment = {k: v for k, v in os.environ.items() if k != "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"}
        nspawn = self.spawn(
            self.in_netns(["systemd-nspawn", "--quiet", "-D", str(merged), "-M", spec.name, "--boot",
                           "--register=no", "--keep-unit", "--network-bridge=br0",
                           "--resolv-conf=off", "--timezone=off", "--console=passive"]),
            cgroup=cgroup, env=environment, log_file=self.run_dir / f"{spec.name}.console")
        return merged, nspawn

    def _await(self, spec: HostSpec, root: Path, process: subprocess.Popen, timeout: float) -> Host:
        """Waits until systemd in the host finished booting and sshd runs."""
        if spec.emulated:
            host: Host = VmHost(spec, root, process.pid, self.key_of(spec.name), self)
            timeout = max(timeout, vm.BOOT_SECONDS)
            wait_until(lambda: self._ssh_answers(host, process), timeout, f"ssh to {spec.name}", interval=2)
        else:
            host = Host(spec, root, self._wait_for_leader(spec.name, process), process.pid,
                        self.key_of(spec.name))
        deadline = time.monotonic() + timeout
        while True:
            booting = host.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout)
            state = booting.stdout.strip()
            # Not yet an answer: empty, PID 1 is systemd but has not opened its
            # bus ("Failed to connect to bus"); "offline", it has not made
            # /run/systemd/system yet. --wait waits for neither.
            if state not in ("", "offline") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if state not in ("running", "degraded"):
            console = (self.run_dir / f"{spec.name}.console").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{spec.name} did not boot: {state!r} {booting.stderr.strip()}\n"
                               f"console:\n{console}")
        if state == "degraded":
            failed = host.run(["systemctl", "--failed", "--plain", "--no-legend"], check=False).stdout
            log(f"{spec.name} booted degraded: {failed.strip()}")
        wait_until(lambda: host.run(["systemctl", "is-active", "ssh"], check=False).returncode == 0,
                   30, f"sshd on {spec.name}")
        if not spec.emulated:
            _delegate_controllers(host)
        self.hosts[spec.name] = host
        return host

    def _ssh_answers(self, host: Host, process: subprocess.Popen) -> bool:
        self._check_running(host.name, process, "qemu")
        return host.run(["true"], check=False, timeout=60).returncode == 0

    def _check_running(self, name: str, process: subprocess.Popen, what: str) -> None:
        """Raises, with the end of its console, if the process running host
        `name` has exited."""
        if process.poll() is not None:
            console = (self.run_dir / f"{name}.console").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} for {name} exited {process.returncode}:\n{console}")

    def _configure(self, spec: HostSpec, root: Path) -> None:
        (root / "etc/hostname").write_text(spec.name + "\n")
        hosts = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{s.ip} {s.name}\n" for s in [spec])
        (root / "etc/hosts").write_text(hosts)
        # A container's: the same name as systemd's own container default
        # (DHCP), so this one replaces it. A VM's: its one NIC.
        network, interface = ("80-lab.network", vm.INTERFACE) if spec.emulated \
            else ("80-container-host0.network", "host0")
        (root / f"etc/systemd/network/{network}").write_text(
            f"[Match]\nName={interface}\n\n[Network]\nAddress={spec.ip}/24\nLinkLocalAddressing=no\n"
            "IPv6AcceptRA=no\n")
        (root / "etc/apt/apt.conf.d/01proxy").write_text(
            f'Acquire::http::Proxy "http://{self.gateway}:{APT_PROXY_PORT}";\nAcquire::Retries "5";\n')
        if spec.emulated:
            vm.skip_man_db_updates(root)
        run(["ssh-keygen", "-A", "-f", str(root)], stdout=subprocess.DEVNULL)
        key = self.key_of(spec.name)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vagrant@{spec.name}", "-f", str(key)])
        authorize_vagrant_key(root, Path(f"{key}.pub"))

    def key_of(self, name: str) -> Path:
        """The private key that logs in to host `name` as `vagrant`."""
        return self.data_dir / name / "id_ed25519"

    def _wait_for_leader(self, name: str, nspawn: subprocess.Popen) -> int:
        """The container's PID 1, seen from here: a descendant of nspawn."""
        found: list[int] = []

        def find() -> bool:
            self._check_running(name, nspawn, "systemd-nspawn")
            for pid in _descendants(nspawn.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                nspid = next((line.split()[1:] for line in status.splitlines()
                              if line.startswith("NSpid:")), [])
                # PID 1 inside, and already systemd: before its exec, nspawn's
                # child is PID 1 too, and systemctl would find no manager.
                comm = next((line.split()[1] for line in status.splitlines()
                             if line.startswith("Name:")), "")
                if len(nspid) > 1 and nspid[-1] == "1" and comm == "systemd":
                    found.append(pid)
                    return True
            return False

        wait_until(find, 30, f"PID 1 of {name}")
        return found[0]

    def _forward(self, spec: HostSpec, forward: Forward) -> None:
        self.bridge(f"{spec.name}-{forward.guest_port}", forward.host_ip, forward.host_port,
                    forward.guest_ip or spec.ip, forward.guest_port)

    def bridge(self, label: str, host_ip: str, host_port: int, target_ip: str, target_port: int) -> None:
        """host_ip:host_port on this machine reaches target_ip:target_port in
        the lab: two socats joined by a unix socket, which no network namespace
        confines. Both listen with a deep backlog: with socat's default of 5,
        a burst of 200 connections overflowed the unix socket's queue while
        socat forked, and clients were reset, which a real forward never does."""
        sock = self.run_dir / f"{label}.sock"
        self.spawn(self.in_netns(["socat", f"UNIX-LISTEN:{sock},fork,unlink-early,backlog=4096",
                                  f"TCP:{target_ip}:{target_port}"]))
        wait_until(sock.exists, 10, f"forward socket {sock.name}")
        self.spawn(["socat", f"TCP-LISTEN:{host_port},bind={host_ip},fork,reuseaddr,backlog=4096",
                    f"UNIX-CONNECT:{sock}"])
        wait_until(lambda: listening(host_port, host_ip), 10,
                   f"{host_ip}:{host_port} -> {label}")


def apt_proxy_command() -> list[str]:
    """apt-cacher-ng on 127.0.0.1:HOST_APT_PROXY_PORT in the foreground,
    caching under CACHE; its folders and configuration made first."""
    cache = CACHE / "apt-cacher-ng"
    for directory in (cache, cache / "log", cache / "conf"):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, *_user_ids("apt-cacher-ng"))
    # Our own configuration, without the stock remap rules: those send
    # deb.debian.org requests to a mirror list instead, and fail. With
    # none, it fetches exactly what the guests' sources.list names.
    (cache / "conf" / "acng.conf").write_text(
        f"CacheDir: {cache}\nLogDir: {cache / 'log'}\nPort: {HOST_APT_PROXY_PORT}\n"
        "BindAddress: 127.0.0.1\nForeGround: 1\nExThreshold: 4\n")
    # Never `apt-cacher-ng --help`: it starts a daemon on 0.0.0.0.
    return ["apt-cacher-ng", "-c", str(cache / "conf")]


def start_apt_proxy(log_file: Path) -> int | None:
    """Starts apt-cacher-ng for labs that run side by side (one lab's exit
    must not stop the proxy another is using); returns its PID, for the
    caller to stop, or None if one is already running."""
    if listening(HOST_APT_PROXY_PORT):
        return None
    with open(log_file, "ab") as out:
        process = subprocess.Popen(apt_proxy_command(), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    wait_until(lambda: listening(HOST_APT_PROXY_PORT), 15, f"apt-cacher-ng on 127.0.0.1:{HOST_APT_PROXY_PORT}")
    return process.pid


# The cgroup hierarchies a host's processes join: systemd's own (v1 name=
# systemd, and cgroup2) and the v1 controllers whose limits the tests rely on.
CGROUP_CONTROLLERS = ("memory", "pids")
CGROUP_HIERARCHIES = ("systemd", "unified", *CGROUP_CONTROLLERS)


def cgroup_dirs(cgroup: str) -> list[Path]:
    """cgroup's folder in each hierarchy of CGROUP_HIERARCHIES this machine mounts."""
    root = Path("/sys/fs/cgroup")
    return [root / hierarchy / cgroup for hierarchy in CGROUP_HIERARCHIES if (root / hierarchy).is_dir()]


def _delegate_controllers(host: "Host") -> None:
    """nspawn mounts the v1 controllers read-only inside, so the host's
    systemd cannot apply MemoryMax or TasksMax. Make them writable (the host
    sees only its own subtree: nspawn gives it a cgroup namespace) and have
    systemd look again; after this, a unit past its MemoryMax is killed."""
    mounted = [c for c in CGROUP_CONTROLLERS
               if host.run(["mountpoint", "-q", f"/sys/fs/cgroup/{c}"], check=False).returncode == 0]
    if not mounted:
        return  # a cgroup2-only machine: nspawn delegates the controllers itself
    for controller in mounted:
        host.run(["mount", "-o", "remount,bind,rw", f"/sys/fs/cgroup/{controller}"])
    host.run(["systemctl", "daemon-reexec"])
    wait_until(lambda: host.run(["systemctl", "is-system-running"], check=False).stdout.strip()
               in ("running", "degraded"), 30, f"systemd on {host.name} after daemon-reexec")


def _descendants(pid: int) -> list[int]:
    result, queue = [], [pid]
    while queue:
        current = queue.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            result.extend(children)
            queue.extend(children)
    return result


def authorize_vagrant_key(root: Path, public_key: Path) -> None:
    """Makes `public_key` the one key that logs in as `vagrant` in root."""
    ssh_dir = root / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key.read_text())
    uid, gid = _ids_in(root, "vagrant")
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)
    (ssh_dir / "authorized_keys").chmod(0o600)


def _ids_in(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise KeyError(user)


def _user_ids(user: str) -> tuple[int, int]:
    return _ids_in(Path("/"), user)


# CPU time the hosts of each lab this process took down used, in seconds
# (their cgroups' usage: systemd, the services, what the playbook ran there,
# and an emulated host's qemu), for the tests' timing table.
CPU_SECONDS: dict[str, float] = {}


def _cpu_seconds(cgroup: str) -> float:
    """cpu.stat's usage of `cgroup`, in the hierarchy that keeps one (cgroup2's)."""
    for directory in cgroup_dirs(cgroup):
        try:
            return int(next(line.split()[1] for line in (directory / "cpu.stat").read_text().splitlines()
                            if line.startswith("usage_usec "))) / 1e6
        except (OSError, StopIteration):
            continue
    return 0.0


def down(name: str) -> None:
    """Removes everything lab `name` started or made, from its state file."""
    run_dir = RUN / name
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    if state.get("cgroups"):
        CPU_SECONDS[name] = CPU_SECONDS.get(name, 0.0) + sum(map(_cpu_seconds, state["cgroups"]))
    pids = state.get("pids", [])
    # nspawn first (SIGTERM shuts the container down cleanly), socat after.
    # SIGTERM to each process alone (nspawn turns it into an orderly poweroff
    # of its container); then SIGKILL to whatever is left of their groups.
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            _signal(pid, sig, group=sig == signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
    for mount in reversed(state.get("mounts", [])):
        if os.path.ismount(mount):
            subprocess.run(["umount", "--lazy", mount], check=False)
    if state.get("route"):
        subprocess.run(["ip", "route", "del", *state["route"]], check=False)
    netns = state.get("netns")
    if netns and Path(f"/run/netns/{netns}").exists():
        # What our processes started and let go inside the lab (daemonized
        # qemu and dnsmasq, Vagrant's SSH tunnels): nothing else lives there.
        for _ in range(50):
            leftover = subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                                      text=True).stdout.split()
            if not leftover:
                break
            for pid in map(int, leftover):
                _signal(pid, signal.SIGKILL, group=False)
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    for cgroup in state.get("cgroups", []):
        for path in cgroup_dirs(cgroup):
            # The host's own systemd made cgroups inside (payload/init.scope,
            # system.slice, ...): remove the tree from its leaves up.
            for directory, _, _ in os.walk(path, topdown=False):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
            try:
                path.parent.rmdir()  # the lab's own, once its last host is gone
            except OSError:
                pass
    shutil.rmtree(DATA / name, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)  # each spawned process leads its own session
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
