"""End to end: a cluster file's nodes as test hosts, deployed by
`ansible-playbook ansible/playbook.yaml` through inventory.py, exactly as
against Vagrant VMs; then `curl localhost:8080` sorts."""

import os
import re
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from testhosts import cluster_lab

ROOT = Path(__file__).resolve().parent.parent


def playbook(cluster: Path, deb: Path, dotfile: Path, *args: str, check: bool = True) -> tuple[str, float]:
    env = dict(os.environ, SORTD_CLUSTER=str(cluster), VAGRANT_DOTFILE_PATH=str(dotfile),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    started = time.monotonic()
    result = subprocess.run(["ansible-playbook", "ansible/playbook.yaml", "-e", f"web_deb={deb}", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - started
    if check:
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout + result.stderr, elapsed


def recap(output: str) -> dict[str, dict[str, int]]:
    hosts = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return hosts


def sort_at(port: int) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b'{"x1":"[5,3,9]","x2":"4"}')
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


@pytest.fixture()
def dotfile(tmp_path, monkeypatch) -> Path:
    """Where the test hosts leave their keys, as Vagrant's .vagrant would."""
    path = tmp_path / "vagrant-dotfile"
    monkeypatch.setenv("VAGRANT_DOTFILE_PATH", str(path))
    return path


@contextmanager
def cluster_up(cluster: Path, name: str):
    """The cluster file's nodes booted as test hosts; removed on exit."""
    lab, specs = cluster_lab(cluster, name=name)
    with lab:
        started = time.monotonic()
        lab.boot_all(specs)
        yield lab, time.monotonic() - started


def test_default_cluster_deploys_sorts_on_8080_and_converges(debs, dotfile):
    deb, _ = debs
    cluster = ROOT / "cluster.json"
    with cluster_up(cluster, "deploy") as (lab, booted):
        output, first = playbook(cluster, deb, dotfile)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(8080) == '{"sorted_list":[3,4,5,9]}'

        output, second = playbook(cluster, deb, dotfile)
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        output, checked = playbook(cluster, deb, dotfile, "--check")
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        print(f"default cluster: boot {booted:.1f}s, first playbook {first:.1f}s, "
              f"second {second:.1f}s (changed=0), --check {checked:.1f}s (changed=0)")

        # A broken nginx configuration fails the play at the check, before any
        # reload, and nginx keeps serving the configuration it has.
        host = lab.hosts["web-01"]
        host.run(["sh", "-c", "echo 'this is not nginx syntax' > /etc/nginx/conf.d/broken.conf; "
                              "rm /etc/nginx/sites-enabled/sortd"])
        output, _ = playbook(cluster, deb, dotfile, check=False)
        assert recap(output)["web-01"]["failed"] == 1, output[-4000:]
        assert "Check nginx configuration" in output and "RUNNING HANDLER [web : Reload nginx]" not in output
        assert sort_at(8080) == '{"sorted_list":[3,4,5,9]}'
        host.run(["rm", "/etc/nginx/conf.d/broken.conf"])
        output, _ = playbook(cluster, deb, dotfile)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(8080) == '{"sorted_list":[3,4,5,9]}'
    assert not (dotfile / "machines").exists(), "teardown left the node keys behind"


def test_missing_deb_fails_saying_how_to_build_it(dotfile, tmp_path):
    output, _ = playbook(ROOT / "cluster.json", tmp_path / "sortd_none.deb", dotfile, check=False)
    assert "Build it with: debian/build" in output


def test_three_node_example_converges(debs, dotfile):
    deb, _ = debs
    cluster = ROOT / "examples/cluster-3-nodes.json"
    with cluster_up(cluster, "deploy3") as (_, booted):
        output, first = playbook(cluster, deb, dotfile)
        assert set(recap(output)) == {"web-01", "web-02", "web-03"}
        for port in (8080, 8081, 8082):
            assert sort_at(port) == '{"sorted_list":[3,4,5,9]}'
        output, second = playbook(cluster, deb, dotfile)
        assert all(counts["changed"] == 0 for counts in recap(output).values()), output[-4000:]
        print(f"3-node cluster: boot {booted:.1f}s, first playbook {first:.1f}s, "
              f"second {second:.1f}s (changed=0)")
