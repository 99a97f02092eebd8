"""The users' first command, for real: `vagrant up` of the default
cluster.json with vagrant-libvirt (qemu in software emulation), the
project's own Vagrantfile unchanged and its Ansible provisioner; then
`curl 127.0.0.1:8080` sorts and `vagrant destroy -f` leaves nothing behind.
(`vagrant provision` runs the same provisioner again: that a second run of
the playbook changes nothing is tests/test_deploy.py's, without emulation,
where each task does not cost seconds.)"""

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from clusters import LB_PORT, PLAIN_ANSIBLE, ROOT, SORTED, forwarded, recap, sort_at, tree_copy, version_of
from testlab import listening, node_forwards, vagrant_nodes
from testlab.hosts import CPU_SECONDS
from testlab.vagrant import VagrantLab, box


def test_vagrant_up_provision_destroy_with_libvirt(tmp_path, debs):
    timings = {}
    started = time.monotonic()
    # As a user would, in a clone of the project (a copy of this tree: other
    # streams build packages here meanwhile) where debian/build has run: the
    # provisioner takes the newest build in the clone's target/debian. The
    # build is the run's own release (building it again here would only
    # compile sortd once more).
    clone = tree_copy(tmp_path / "sortd", release_build=False)
    (clone / "target" / "debian").mkdir(parents=True)
    version = version_of(Path(shutil.copy(debs[1], clone / "target" / "debian")))
    timings["the clone"] = time.monotonic() - started

    forwards = [forward for node in vagrant_nodes(ROOT / "cluster.json") for forward in node_forwards(node)]
    dotfile = tmp_path / "vagrant-dotfile"
    with VagrantLab() as lab:
        started = time.monotonic()
        env = {"SORTD_BOX": box(lab.apt_proxy), "VAGRANT_CWD": str(clone), "VAGRANT_DOTFILE_PATH": str(dotfile),
               **PLAIN_ANSIBLE}
        # Vagrant's forwards are in the lab's network namespace, as on a
        # laptop; this machine reaches them shifted by the stream's offset.
        for forward in forwards:
            lab.expose(forward.host_port, forward.host_ip, forwarded(forward.host_port))
        timings["lab and box"] = time.monotonic() - started
        destroyed = False
        try:
            started = time.monotonic()
            output, status = lab.vagrant(["up", "--provider=libvirt"], env)
            timings["vagrant up"] = time.monotonic() - started
            # vagrant's own output last: the end of a failure's report is
            # what a reader of the run's tail (CI's) sees.
            assert status == 0, lab_logs(lab) + "\n== vagrant up, its end\n" + output[-8000:]
            assert recap(output)["web-01"]["failed"] == 0, output[-8000:]
            timings["of which: to SSH"] = lab.when("Machine booted and ready")
            timings["the playbook"] = timings["vagrant up"] - lab.when("Running provisioner")

            # The service, through the forwarded port, as the README says.
            assert sort_at(LB_PORT) == SORTED
            with urllib.request.urlopen(f"http://127.0.0.1:{LB_PORT}/healthz", timeout=10) as answer:
                assert json.loads(answer.read()) == {"status": "ok"}
                assert answer.headers["X-Sortd-Version"] == version
            # The node, through its forwarded SSH port with the key Vagrant
            # made for it: a VM with a kernel of its own, not a container.
            key = dotfile / "machines/web-01/libvirt/private_key"
            virt = subprocess.run(
                ["ssh", "-p", str(forwarded(22003)), "-i", str(key), "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                 "vagrant@127.0.0.1", "systemd-detect-virt; ip -4 -o addr show eth1"],
                capture_output=True, text=True, timeout=60, check=True).stdout
            assert virt.splitlines()[0] == "qemu", virt
            assert "192.168.56.11/24" in virt, virt

            timings["the VM's CPU"] = CPU_SECONDS["vagrant"] = lab.vm_cpu_seconds()
            started = time.monotonic()
            output, status = lab.vagrant(["destroy", "-f"], env)
            timings["vagrant destroy -f"] = time.monotonic() - started
            destroyed = True
            assert status == 0, output[-4000:]
            # vagrant-libvirt keeps the box's base volume in the pool to clone
            # the next machine from (a cache, like VirtualBox's imported box);
            # the lab's end removes it with the rest of the lab's libvirt.
            left = lab.leftovers()
            left["volumes"] = [v for v in left["volumes"] if "_vagrant_box_image_" not in v]
            assert left == {"domains": [], "networks": [], "volumes": [], "processes": []}, left
            assert not list((dotfile / "machines/web-01/libvirt").glob("id")), "machine id left"
        finally:
            if not destroyed:
                lab.vagrant(["destroy", "-f"], env)
            print("vagrant-libvirt timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    # The lab's end takes the rest (libvirt's state with the box's base
    # volume, the daemons, the namespaces, the forwarded ports).
    assert not Path(f"/run/netns/{lab.netns}").exists()
    assert not lab.data_dir.exists() and not lab.run_dir.exists()
    assert not any(listening(forwarded(forward.host_port), forward.host_ip) for forward in forwards)


def lab_logs(lab: VagrantLab) -> str:
    logs = []
    for log_file in sorted(lab.run_dir.glob("*.log")) + sorted(
            (lab.data_dir / "libvirt/var-log-libvirt").rglob("*.log")):
        logs.append(f"\n== {log_file}\n" + log_file.read_text(errors="replace")[-3000:])
    return "".join(logs)
