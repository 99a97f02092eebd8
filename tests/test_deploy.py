"""End to end: a cluster file's nodes as test hosts, deployed by
`ansible-playbook ansible/playbook.yaml` through inventory.py, as cloud hosts
are; then `curl localhost:8080` sorts. The default cluster, and one that
mixes Debian suites and architectures."""

import json
import shutil
from pathlib import Path

import pytest

from clusters import LB_PORT, ROOT, SORTED, STATE_DIR, cluster_up, playbook, recap, served, sort_at, version_of
from test_package import check_unit_files, nothing_left
from testlab.hosts import DEFAULT_SUITE


def on_suite(cluster: dict, suite: str) -> dict:
    """The cluster with every node on a suite's Vagrant box."""
    return {"nodes": [dict(node, box=f"debian/{suite}64") for node in cluster["nodes"]]}


def test_default_cluster_deploys_sorts_on_8080_and_converges(debs, arm64_debs, tmp_path):
    # On the default suite; the other's nodes converge in the mixed cluster below.
    deb, _ = debs
    suite = DEFAULT_SUITE
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(on_suite(json.loads((ROOT / "cluster.json").read_text()), suite)))
    # One release, both builds side by side, named by its arm64 build: the
    # (amd64) node gets the amd64 build found beside it. (The other way
    # round: the mixed cluster below.)
    release = tmp_path / "release"
    release.mkdir()
    shutil.copy(deb, release)
    named = Path(shutil.copy(arm64_debs[0], release))
    with cluster_up(cluster, "deploy") as (lab, hosts, booted):
        assert codename(lab.hosts["web-01"]) == suite
        output, first = playbook(hosts, named)
        assert recap(output)["web-01"]["failed"] == 0
        installed = lab.hosts["web-01"].run(["dpkg-query", "-W", "-f", "${Architecture} ${Version}", "sortd"]).stdout
        assert installed == f"amd64 {version_of(deb)}"
        assert sort_at(LB_PORT) == SORTED
        # A one-node cluster has no load balancer, and says nothing about it.
        assert "WARNING" not in output, output

        output, second = playbook(hosts, deb)
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        output, checked = playbook(hosts, deb, "--check")
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        print(f"default cluster on {suite}: boot {booted:.1f}s, first playbook {first:.1f}s, "
              f"second {second:.1f}s (changed=0), --check {checked:.1f}s (changed=0)")

        # A broken nginx configuration fails the play at the check, before any
        # reload, and nginx keeps serving the configuration it has. (The
        # stray metrics file, which a cluster without monitoring must not
        # have, gives the role an nginx change to make.)
        host = lab.hosts["web-01"]
        host.run(["sh", "-c", "echo 'this is not nginx syntax' > /etc/nginx/conf.d/broken.conf; "
                              "touch /etc/nginx/conf.d/sortd-metrics.conf"])
        output, _ = playbook(hosts, deb, check=False)
        assert recap(output)["web-01"]["failed"] == 1, output[-4000:]
        assert "RUNNING HANDLER [nginx : Check nginx configuration]" in output, output[-4000:]
        assert "RUNNING HANDLER [nginx : Reload nginx]" not in output, output[-4000:]
        assert sort_at(LB_PORT) == SORTED
        host.run(["rm", "/etc/nginx/conf.d/broken.conf"])
        output, _ = playbook(hosts, deb)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(LB_PORT) == SORTED

        # A release built for arm64 only stops before the node changes,
        # saying how to build the missing one.
        lonely = tmp_path / "lonely" / "sortd_0.0.1-1_arm64.deb"
        lonely.parent.mkdir()
        lonely.write_bytes(arm64_debs[0].read_bytes())
        output, _ = playbook(hosts, lonely, check=False)
        assert "No amd64 build of sortd 0.0.1-1 for web-01" in output, output[-3000:]
        assert "SORTD_DEB_REVISION=1" in output and recap(output)["web-01"]["changed"] == 0


@pytest.mark.quick
def test_missing_deb_fails_before_any_node_saying_how_to_build_it(tmp_path):
    # The cluster's nodes are not up: the play must stop before it tries them.
    output, _ = playbook(ROOT / "cluster.json", tmp_path / "sortd_none.deb", check=False)
    assert "Build it with: debian/build" in output, output
    assert "UNREACHABLE" not in output, output


def codename(host) -> str:
    return host.sh(". /etc/os-release && echo $VERSION_CODENAME").strip()


@pytest.mark.emulated
def test_a_cluster_of_mixed_suites_and_architectures_converges_and_serves_through_the_lb(debs, arm64_debs,
                                                                                        tmp_path):
    # examples/cluster-mixed-suites.json as written (the load balancer and
    # web-01 on trixie, web-02 on bookworm, all amd64) and an arm64 web node
    # on bookworm (a VM under emulation; tests/test_package.py runs the whole
    # package sequence on a trixie arm64 host, so each kind of arm64 host
    # boots once). One release, both builds side by side: named, the amd64
    # build; the arm64 node installs its own (the other way round: the
    # default cluster above). One run: a second, which changes nothing, is
    # proved on the other clusters, and here it took minutes of emulation.
    # The web nodes converge at once (sortd_web_serial): a first deployment
    # has nothing to keep serving, and an emulated node takes minutes.
    release = tmp_path / "release"
    release.mkdir()
    deb = Path(shutil.copy(debs[1], release))
    arm64_deb = Path(shutil.copy(arm64_debs[1], release))
    example = json.loads((ROOT / "examples/cluster-mixed-suites.json").read_text())
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps({"nodes": example["nodes"] + [{
        "host_name": "web-03", "groups": ["web"], "box": "debian/bookworm64",
        "port_mappings": [{"guest_port": 22, "host_port": 22105}],
        "network_configs": [{"ip": "192.168.56.13"}],
    }]}))
    with cluster_up(cluster, "mixed", archs={"web-03": "arm64"}) as (lab, hosts, booted):
        platforms = {name: (codename(host), host.run(["dpkg", "--print-architecture"]).stdout.strip())
                     for name, host in lab.hosts.items()}
        assert platforms == {"lb-01": ("trixie", "amd64"), "web-01": ("trixie", "amd64"),
                             "web-02": ("bookworm", "amd64"), "web-03": ("bookworm", "arm64")}, platforms
        webs = [name for name in platforms if name.startswith("web-")]
        options = ["-e", json.dumps({"lb_unlimited_clients": [lab.gateway], "sortd_web_serial": len(webs)})]
        output, first = playbook(hosts, deb, *options)
        assert sort_at(LB_PORT) == SORTED
        for name in webs:
            installed = lab.hosts[name].run(["dpkg-query", "-W", "-f", "${Architecture} ${Version}", "sortd"]).stdout
            assert installed == f"{platforms[name][1]} {version_of(deb)}"
        assert all(counts["failed"] == 0 for counts in recap(output).values()), output[-4000:]
        # The load balancer spreads sorts over every web node, of both suites and architectures.
        before = {name: served(lab, name) for name in webs}
        assert all(sort_at(LB_PORT) == SORTED for _ in range(30))
        after = {name: served(lab, name) for name in webs}
        assert all(after[name] > before[name] for name in webs), (before, after)
        print(f"mixed suites and architectures {platforms}: boot {booted:.1f}s, playbook {first:.1f}s; "
              f"sorts per node {after}")
        # The package's essential checks on the bookworm arm64 node, as
        # tests/test_package.py makes them on its hosts: systemd's checks,
        # then a purge that leaves nothing of the package (the deployment's
        # own files stay: its releases and history, and its nginx snippets).
        arm64 = lab.hosts["web-03"]
        check_unit_files(arm64, "bookworm arm64 (deployed)")
        arm64.run(["apt-get", "purge", "-y", "-q", "sortd"])
        deployments = (STATE_DIR, "/etc/nginx/conf.d/sortd-")
        left = [line for line in nothing_left(arm64).splitlines() if not line.startswith(deployments)]
        assert left == [], left
        assert arm64.run(["systemctl", "is-active", "nginx"]).stdout.strip() == "active"
