"""End to end: a cluster file's nodes as test hosts, deployed by
`ansible-playbook ansible/playbook.yaml` through inventory.py, as cloud hosts
are; then `curl localhost:8080` sorts. The default cluster on each Debian
suite, and a cluster that mixes them."""

import json

import pytest
from clusters import ROOT, SORTED, cluster_up, playbook, recap, served, sort_at
from testlab.hosts import SUITES


def on_suite(cluster: dict, suite: str) -> dict:
    """The cluster with every node on a suite's Vagrant box."""
    return {"nodes": [dict(node, box=f"debian/{suite}64") for node in cluster["nodes"]]}


@pytest.mark.parametrize("suite", SUITES)
def test_default_cluster_deploys_sorts_on_8080_and_converges(debs, suite, tmp_path):
    deb, _ = debs
    cluster = tmp_path / "cluster.json"
    cluster.write_text(json.dumps(on_suite(json.loads((ROOT / "cluster.json").read_text()), suite)))
    with cluster_up(cluster, "deploy") as (lab, hosts, booted):
        assert codename(lab.hosts["web-01"]) == suite
        output, first = playbook(hosts, deb)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(8080) == SORTED
        # A one-node cluster has no load balancer, and says nothing about it.
        assert "WARNING" not in output, output

        output, second = playbook(hosts, deb)
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        output, checked = playbook(hosts, deb, "--check")
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        print(f"default cluster on {suite}: boot {booted:.1f}s, first playbook {first:.1f}s, "
              f"second {second:.1f}s (changed=0), --check {checked:.1f}s (changed=0)")

        # A broken nginx configuration fails the play at the check, before any
        # reload, and nginx keeps serving the configuration it has.
        host = lab.hosts["web-01"]
        host.run(["sh", "-c", "echo 'this is not nginx syntax' > /etc/nginx/conf.d/broken.conf; "
                              "rm /etc/nginx/sites-enabled/sortd"])
        output, _ = playbook(hosts, deb, check=False)
        assert recap(output)["web-01"]["failed"] == 1, output[-4000:]
        assert "RUNNING HANDLER [nginx : Check nginx configuration]" in output, output[-4000:]
        assert "RUNNING HANDLER [nginx : Reload nginx]" not in output, output[-4000:]
        assert sort_at(8080) == SORTED
        host.run(["rm", "/etc/nginx/conf.d/broken.conf"])
        output, _ = playbook(hosts, deb)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(8080) == SORTED


def test_missing_deb_fails_before_any_node_saying_how_to_build_it(tmp_path):
    # The cluster's nodes are not up: the play must stop before it tries them.
    output, _ = playbook(ROOT / "cluster.json", tmp_path / "sortd_none.deb", check=False)
    assert "Build it with: debian/build" in output, output
    assert "UNREACHABLE" not in output, output


def codename(host) -> str:
    return host.sh(". /etc/os-release && echo $VERSION_CODENAME").strip()


def test_a_cluster_of_mixed_suites_converges_and_serves_through_the_lb(debs):
    deb, _ = debs
    with cluster_up(ROOT / "examples/cluster-mixed-suites.json", "mixed") as (lab, hosts, booted):
        suites = {name: codename(host) for name, host in lab.hosts.items()}
        assert suites == {"lb-01": "trixie", "web-01": "trixie", "web-02": "bookworm"}
        output, first = playbook(hosts, deb, "-e", json.dumps({"lb_unlimited_clients": [lab.gateway]}))
        assert sort_at(8080) == SORTED
        output, second = playbook(hosts, deb, "-e", json.dumps({"lb_unlimited_clients": [lab.gateway]}))
        assert all(counts["changed"] == 0 for counts in recap(output).values()), output[-4000:]
        # The load balancer spreads sorts over both suites' web nodes.
        before = {node: served(lab, node) for node in ("web-01", "web-02")}
        assert all(sort_at(8080) == SORTED for _ in range(20))
        after = {node: served(lab, node) for node in ("web-01", "web-02")}
        assert all(after[node] > before[node] for node in before), (before, after)
        print(f"mixed cluster {suites}: boot {booted:.1f}s, first playbook {first:.1f}s, "
              f"second {second:.1f}s (changed=0)")
