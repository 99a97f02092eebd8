"""End to end: a cluster file's nodes as test hosts, deployed by
`ansible-playbook ansible/playbook.yaml` through inventory.py, as cloud hosts
are; then `curl localhost:8080` sorts."""

from clusters import ROOT, SORTED, cluster_up, playbook, recap, sort_at


def test_default_cluster_deploys_sorts_on_8080_and_converges(debs):
    deb, _ = debs
    with cluster_up(ROOT / "cluster.json", "deploy") as (lab, hosts, booted):
        output, first = playbook(hosts, deb)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(8080) == SORTED
        # A one-node cluster has no load balancer, and says nothing about it.
        assert "WARNING" not in output, output

        output, second = playbook(hosts, deb)
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        output, checked = playbook(hosts, deb, "--check")
        assert recap(output)["web-01"]["changed"] == 0, output[-4000:]
        print(f"default cluster: boot {booted:.1f}s, first playbook {first:.1f}s, "
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
