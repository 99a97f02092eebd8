"""End to end: a cluster file's nodes as test hosts, deployed by
`ansible-playbook ansible/playbook.yaml` through inventory.py, exactly as
against Vagrant VMs; then `curl localhost:8080` sorts."""

from clusters import ROOT, SORTED, cluster_up, playbook, recap, sort_at


def test_default_cluster_deploys_sorts_on_8080_and_converges(debs, dotfile):
    deb, _ = debs
    cluster = ROOT / "cluster.json"
    with cluster_up(cluster, "deploy") as (lab, booted):
        output, first = playbook(cluster, deb, dotfile)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(8080) == SORTED

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
        assert sort_at(8080) == SORTED
        host.run(["rm", "/etc/nginx/conf.d/broken.conf"])
        output, _ = playbook(cluster, deb, dotfile)
        assert recap(output)["web-01"]["failed"] == 0
        assert sort_at(8080) == SORTED
    assert not (dotfile / "machines").exists(), "teardown left the node keys behind"


def test_missing_deb_fails_saying_how_to_build_it(dotfile, tmp_path):
    output, _ = playbook(ROOT / "cluster.json", tmp_path / "sortd_none.deb", dotfile, check=False)
    assert "Build it with: debian/build" in output
