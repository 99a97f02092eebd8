"""inventory.py: the Ansible view of cluster.json, and its checks of bad
files, which the Vagrantfile shares; and what a run may not lower of what an
environment's settings guard (ansible/filter_plugins/posture.py)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ansible" / "filter_plugins"))
from posture import sortd_lowered  # noqa: E402


def inventory(cluster: Path | None, *args: str, dotfile: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("SORTD_CLUSTER", None)
    if cluster:
        env["SORTD_CLUSTER"] = str(cluster)
    if dotfile:
        env["VAGRANT_DOTFILE_PATH"] = str(dotfile)
    return subprocess.run([str(ROOT / "inventory.py"), *args], env=env, capture_output=True, text=True)


def write(tmp_path: Path, document) -> Path:
    path = tmp_path / "cluster.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def vagrant_node(name="web-01", ssh_port=22003, **extra):
    return {"host_name": name, "port_mappings": [{"guest_port": 22, "host_port": ssh_port}], **extra}


def test_default_cluster_is_one_web_node_forwarding_8080_and_22003(tmp_path):
    result = inventory(None, "--list", dotfile=tmp_path)
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["web"]["hosts"] == ["web-01"]
    hostvars = listing["_meta"]["hostvars"]["web-01"]
    hostvars.pop("ansible_control_path")  # its own tests below
    assert hostvars == {
        "ansible_host": "127.0.0.1",
        "ansible_port": 22003,
        "ansible_user": "vagrant",
        "ansible_ssh_private_key_file": str(tmp_path / "machines/web-01/virtualbox/private_key"),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "sortd_private_ip": "192.168.56.11",
    }
    mappings = json.loads((ROOT / "cluster.json").read_text())["nodes"][0]["port_mappings"]
    assert {(m["guest_port"], m["host_port"], m["host_ip"]) for m in mappings} == \
        {(80, 8080, "127.0.0.1"), (22, 22003, "127.0.0.1")}


def test_key_path_follows_whichever_provider_exists(tmp_path):
    key = tmp_path / "machines/web-01/libvirt/private_key"
    key.parent.mkdir(parents=True)
    key.write_text("key")
    hostvars = json.loads(inventory(None, "--host", "web-01", dotfile=tmp_path).stdout)
    assert hostvars["ansible_ssh_private_key_file"] == str(key)


def test_groups_come_from_the_nodes_and_default_to_web(tmp_path):
    cluster = write(tmp_path, {"nodes": [
        vagrant_node("lb-01", 22010, groups=["lb"]),
        vagrant_node("web-01", 22011),
        vagrant_node("web-02", 22012, groups=["web"]),
    ]})
    listing = json.loads(inventory(cluster, "--list").stdout)
    assert listing["lb"]["hosts"] == ["lb-01"]
    assert listing["web"]["hosts"] == ["web-01", "web-02"]
    assert set(listing["_meta"]["hostvars"]) == {"lb-01", "web-01", "web-02"}


def test_the_original_services_cluster_file_still_works(tmp_path):
    # The original service's file: no groups, an extra forward of 5000.
    cluster = write(tmp_path, {"nodes": [{"host_name": "web-01", "port_mappings": [
        {"guest_port": 80, "host_port": 8080, "host_ip": "127.0.0.1"},
        {"guest_port": 5000, "host_port": 5000, "host_ip": "127.0.0.1"},
        {"guest_port": 22, "host_port": 22003, "host_ip": "127.0.0.1"}],
        "network_configs": [{"ip": "192.167.32.3", "name": "vboxnet0", "adapter": 2}]}]})
    listing = json.loads(inventory(cluster, "--list").stdout)
    assert listing["web"]["hosts"] == ["web-01"]


def test_cloud_nodes_use_their_own_address_user_and_key(tmp_path):
    cluster = write(tmp_path, {"nodes": [{"host_name": "web-01", "ssh": {
        "host": "web-01.example.org", "user": "admin", "key": "keys/id_ed25519", "private_ip": "10.0.1.5"}}]})
    hostvars = json.loads(inventory(cluster, "--host", "web-01").stdout)
    hostvars.pop("ansible_control_path")  # its own tests below
    assert hostvars == {
        "ansible_host": "web-01.example.org",
        "ansible_port": 22,
        "ansible_user": "admin",
        "ansible_ssh_private_key_file": str(tmp_path / "keys/id_ed25519"),
        "sortd_private_ip": "10.0.1.5",
    }


def test_a_known_hosts_file_is_checked_instead_of_the_users(tmp_path):
    cluster = write(tmp_path, {"nodes": [{"host_name": "web-01", "ssh": {
        "host": "127.0.0.1", "port": 22003, "user": "vagrant", "key": "id", "known_hosts": "hosts/known"}}]})
    hostvars = json.loads(inventory(cluster, "--host", "web-01").stdout)
    assert hostvars["ansible_ssh_common_args"] == f"-o UserKnownHostsFile={tmp_path / 'hosts/known'}"
    assert "StrictHostKeyChecking" not in json.dumps(hostvars)


def cloud_node(name, host, **ssh):
    return {"host_name": name, "ssh": {"host": host, "user": "admin", "key": "id", **ssh}}


def test_a_node_behind_a_bastion_is_reached_through_it_with_the_bastions_own_key_and_host_check(tmp_path):
    cluster = write(tmp_path, {"nodes": [
        cloud_node("lb-01", "203.0.113.10", port=2222, key="keys/bastion", known_hosts="known"),
        cloud_node("web-01", "10.0.1.11", jump="lb-01", known_hosts="known"),
        cloud_node("web-02", "10.0.1.12", jump="ops@bastion.example.org:2200")]})
    hostvars = json.loads(inventory(cluster, "--list").stdout)["_meta"]["hostvars"]
    known = tmp_path / "known"
    # The node's own host key check and the jump, in one host variable.
    assert shlex.split(hostvars["web-01"]["ansible_ssh_common_args"]) == [
        "-o", f"UserKnownHostsFile={known}",
        "-o", f"ProxyCommand=ssh -W %h:%p -p 2222 -i {tmp_path / 'keys/bastion'} -o IdentitiesOnly=yes "
              f"-o BatchMode=yes -o UserKnownHostsFile={known} admin@203.0.113.10"]
    assert hostvars["web-01"]["ansible_host"] == "10.0.1.11"
    assert hostvars["web-02"]["ansible_ssh_common_args"] == "-o ProxyJump=ops@bastion.example.org:2200"
    assert shlex.split(hostvars["lb-01"]["ansible_ssh_common_args"]) == ["-o", f"UserKnownHostsFile={known}"]


def test_nodes_at_the_same_private_address_behind_other_bastions_share_no_ssh_connection(tmp_path):
    # Staging and production both put web-01 at 10.0.1.11: Ansible's own
    # name for a shared connection (address, port, user) would send a run
    # for one environment, within ControlPersist of a run for the other,
    # through the other's connection, to the other's node.
    def control_paths(folder, bastion):
        (tmp_path / folder).mkdir(exist_ok=True)
        cluster = write(tmp_path / folder, {"nodes": [
            cloud_node("lb-01", bastion), cloud_node("web-01", "10.0.1.11", jump="lb-01"),
            cloud_node("web-02", "10.0.1.11", jump="ops@bastion.example.org:2200")]})
        hostvars = json.loads(inventory(cluster, "--list").stdout)["_meta"]["hostvars"]
        return {name: variables.get("ansible_control_path") for name, variables in hostvars.items()}

    staging, production = control_paths("staging", "203.0.113.10"), control_paths("production", "203.0.113.20")
    assert all(path.startswith("%(directory)s/") for path in staging.values())
    assert staging["web-01"] != production["web-01"]
    assert staging["web-01"] != staging["web-02"]
    assert control_paths("staging", "203.0.113.10") == staging  # the next run shares it again


def test_a_vagrant_vm_and_a_test_host_on_the_same_forwarded_port_share_no_ssh_connection(tmp_path):
    # 127.0.0.1:22003 as vagrant: a Vagrant VM's forwarded port, and a local
    # test cluster's host (scripts/local-cluster), which the gate runs side
    # by side (a Vagrant run once went through a test cluster's connection
    # and found no temporary directory of its own there).
    vm = {"host_name": "web-01", "groups": ["web"], "port_mappings": [{"guest_port": 22, "host_port": 22003}]}
    host = {"host_name": "web-01", "groups": ["web"],
            "ssh": {"host": "127.0.0.1", "port": 22003, "user": "vagrant", "key": str(tmp_path / "lab-key")}}
    paths = []
    for name, node in (("vagrant", vm), ("lab", host)):
        (tmp_path / name).mkdir()
        listing = json.loads(inventory(write(tmp_path / name, {"nodes": [node]}), "--list",
                                       dotfile=tmp_path / name / ".vagrant").stdout)
        variables = listing["_meta"]["hostvars"]["web-01"]
        assert (variables["ansible_host"], variables["ansible_port"], variables["ansible_user"]) == \
            ("127.0.0.1", 22003, "vagrant")
        paths.append(variables["ansible_control_path"])
    assert paths[0] != paths[1], paths


def test_every_group_the_playbook_names_is_listed_even_when_empty(tmp_path):
    listing = json.loads(inventory(None, "--list", dotfile=tmp_path).stdout)
    assert listing["lb"] == {"hosts": []}


def test_cloud_key_in_the_home_directory_is_expanded(tmp_path):
    cluster = write(tmp_path, {"nodes": [{"host_name": "web-01", "ssh": {
        "host": "203.0.113.10", "user": "admin", "key": "~/.ssh/sortd"}}]})
    hostvars = json.loads(inventory(cluster, "--host", "web-01").stdout)
    assert hostvars["ansible_ssh_private_key_file"] == str(Path("~/.ssh/sortd").expanduser())


def test_three_node_example_is_valid():
    result = inventory(ROOT / "examples/cluster-3-nodes.json", "--check")
    assert result.returncode == 0, result.stderr
    assert "4 node(s): lb-01, web-01, web-02, web-03" in result.stdout
    listing = json.loads(inventory(ROOT / "examples/cluster-3-nodes.json", "--list").stdout)
    assert listing["lb"]["hosts"] == ["lb-01"]
    assert listing["web"]["hosts"] == ["web-01", "web-02", "web-03"]


def test_an_environments_settings_are_its_groups_variables_and_e_still_wins(tmp_path):
    cluster = write(tmp_path, {
        "settings": {"all": {"lb_tls": False, "firewall_ssh_cidrs": ["198.51.100.0/24"]},
                     "lb": {"lb_tls": True}},
        "nodes": [vagrant_node("lb-01", 22010, groups=["lb"]), vagrant_node("web-01", 22011)]})
    listing = json.loads(inventory(cluster, "--list").stdout)
    assert listing["all"] == {"vars": {"lb_tls": False, "firewall_ssh_cidrs": ["198.51.100.0/24"]}}
    assert listing["lb"] == {"hosts": ["lb-01"], "vars": {"lb_tls": True}}
    assert "vars" not in listing["web"]

    def value(host: str, name: str, *extra: str):
        # As a play sees it: Ansible's own precedence (the group's over all's, -e over both).
        env = dict(os.environ, SORTD_CLUSTER=str(cluster), ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
        result = subprocess.run(["ansible", host, "-m", "ansible.builtin.debug", "-a", f"var={name}", *extra],
                                cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.split("=>", 1)[1])[name]

    assert value("lb-01", "lb_tls") is True
    assert value("web-01", "lb_tls") is False
    assert value("web-01", "firewall_ssh_cidrs") == ["198.51.100.0/24"]
    assert value("lb-01", "lb_tls", "-e", "lb_tls=false") == "false"


@pytest.mark.parametrize("example", ["cloud-staging.json", "cloud-production.json"])
def test_the_cloud_examples_are_valid_and_set_what_production_needs(example):
    result = inventory(ROOT / "examples" / example, "--check")
    assert result.returncode == 0, result.stderr
    listing = json.loads(inventory(ROOT / "examples" / example, "--list").stdout)
    assert listing["lb"]["vars"]["lb_tls"] is True
    assert "0.0.0.0/0" not in listing["all"]["vars"]["firewall_ssh_cidrs"]
    if example == "cloud-production.json":
        assert {"lb_hsts": True, "lb_domain": "sort.example.org"}.items() <= listing["lb"]["vars"].items()
        # Web nodes on the private network: through the bastion, and SSH from it alone.
        assert all("ProxyCommand=ssh -W %h:%p" in listing["_meta"]["hostvars"][web]["ansible_ssh_common_args"]
                   for web in listing["web"]["hosts"])
        assert listing["web"]["vars"]["firewall_ssh_cidrs"] == ["10.0.1.10/32"]


BAD_FILES = [
    ("{", "not valid JSON"),
    ({}, "nodes: missing"),
    ({"nodes": []}, "nodes: [] should be non-empty"),
    ({"nodes": [{"port_mappings": []}]}, "node 0: host_name: missing"),
    ({"nodes": [vagrant_node(), {"host_name": "web-02", "port_mappings": [{"guest_port": "80", "host_port": 8081}]}]},
     "node 1 (web-02): port_mappings[0].guest_port: '80' is not of type 'integer'"),
    ({"nodes": [vagrant_node(groups=["db"])]}, "node 0 (web-01): groups[0]: 'db' is not one of ['web', 'lb', 'monitoring']"),
    ({"nodes": [vagrant_node(mem=512)]}, "node 0 (web-01): unknown field ('mem' was unexpected)"),
    ({"nodes": [vagrant_node(network_configs=[{"ip": "300.1.1.1"}])]},
     "node 0 (web-01): network_configs[0].ip: '300.1.1.1' is not a 'ipv4'"),
    ({"nodes": [vagrant_node(), vagrant_node()]}, "node 1 (web-01): host_name: 'web-01' is also node 0's"),
    ({"nodes": [vagrant_node("web-01", 22003), vagrant_node("web-02", 22003)]},
     "node 1 (web-02): port_mappings[0].host_port: 127.0.0.1:22003 is already forwarded to web-01"),
    ({"nodes": [{"host_name": "web-01", "port_mappings": [{"guest_port": 80, "host_port": 8080}]}]},
     "node 0 (web-01): port_mappings: a Vagrant node needs a mapping for guest_port 22"),
    ({"nodes": [{"host_name": "web-01", "ssh": {"host": "h"}}]}, "node 0 (web-01): ssh.user: missing"),
    ({"nodes": [cloud_node("lb-01", "h"), cloud_node("web-01", "10.0.1.11", jump="lb-1")]},
     "node 1 (web-01): ssh.jump: no node is named 'lb-1'; did you mean lb-01?"),
    ({"nodes": [cloud_node("web-01", "10.0.1.11", jump="web-01")]},
     "node 0 (web-01): ssh.jump: a node cannot be its own jump host"),
    ({"nodes": [cloud_node("lb-01", "h", jump="web-01"), cloud_node("web-01", "10.0.1.11", jump="lb-01")]},
     "node 1 (web-01): ssh.jump: 'lb-01' is itself reached through 'web-01': one jump host only"),
    ({"nodes": [cloud_node("web-01", "10.0.1.11", jump="ops@bastion:port")]},
     "node 0 (web-01): ssh.jump: 'ops@bastion:port' is neither a node's host_name nor an address"),
    ({"settings": {"all": {"lb_tsl": True}}, "nodes": [vagrant_node()]},
     "settings.all.lb_tsl: no role has this setting; did you mean lb_tls?"),
    ({"settings": {"lbs": {"lb_tls": True}}, "nodes": [vagrant_node()]},
     "settings.lbs: not a group (one of all, web, lb, monitoring); did you mean lb?"),
    ({"settings": {"lb": {"lb_hsts": "yes"}}, "nodes": [vagrant_node()]},
     'settings.lb.lb_hsts: "yes" is not of type bool'),
    ({"settings": {"all": {"firewall_ssh_cidrs": "198.51.100.0/24"}}, "nodes": [vagrant_node()]},
     'settings.all.firewall_ssh_cidrs: "198.51.100.0/24" is not of type list'),
    ({"settings": {"all": {"firewall_service_ports": [80, "443"]}}, "nodes": [vagrant_node()]},
     'settings.all.firewall_service_ports: [80, "443"] is not a list of int'),
    ({"settings": {"all": {"web_keep_releases": 2.5}}, "nodes": [vagrant_node()]},
     "settings.all.web_keep_releases: 2.5 is not of type int"),
    ({"settings": {"all": []}, "nodes": [vagrant_node()]}, "settings.all: [] is not of type 'object'"),
]


@pytest.mark.parametrize("document,message", BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_bad_cluster_file_fails_naming_node_and_field(tmp_path, document, message):
    cluster = write(tmp_path, document)
    for args in (["--list"], ["--check"]):
        result = inventory(cluster, *args)
        assert result.returncode != 0
        assert result.stdout == ""
        assert f"{cluster}: {message}" in result.stderr, result.stderr


def test_missing_cluster_file_is_named(tmp_path):
    result = inventory(tmp_path / "nope.json", "--list")
    assert result.returncode != 0 and f"{tmp_path / 'nope.json'}: cannot read" in result.stderr


def test_vagrantfile_validates_and_fails_on_a_bad_file_with_the_same_message(tmp_path):
    def validate(cluster: Path) -> subprocess.CompletedProcess:
        # vagrant-libvirt makes machine folders: keep them out of the project's .vagrant.
        env = dict(os.environ, SORTD_CLUSTER=str(cluster), VAGRANT_DOTFILE_PATH=str(tmp_path / "dotfile"))
        return subprocess.run(["vagrant", "validate"], cwd=ROOT, capture_output=True, text=True, env=env)

    ok = validate(ROOT / "cluster.json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    three = validate(ROOT / "examples/cluster-3-nodes.json")
    assert three.returncode == 0, three.stdout + three.stderr
    pair = validate(ROOT / "examples/cluster-lb-pair.json")  # a port forwarded to the floating address (guest_ip)
    assert pair.returncode == 0, pair.stdout + pair.stderr
    for document, message in (BAD_FILES[4], BAD_FILES[12]):
        cluster = write(tmp_path, document)
        bad = validate(cluster)
        assert bad.returncode != 0
        assert f"{cluster}: {message}" in bad.stdout + bad.stderr


GUARDED = {"lb_tls": True, "lb_hsts": True, "firewall_ssh_cidrs": ["198.51.100.0/24"],
           "firewall_service_sources": ["10.0.1.10/32"]}


@pytest.mark.parametrize("change,lowered", [
    ({}, []),
    ({"lb_tls": False}, ["lb_tls"]),
    ({"lb_hsts": False, "lb_tls": False}, ["lb_tls", "lb_hsts"]),
    ({"firewall_ssh_cidrs": ["0.0.0.0/0"]}, ["firewall_ssh_cidrs"]),
    ({"firewall_ssh_cidrs": ["198.51.100.0/24", "192.0.2.7/32"]}, ["firewall_ssh_cidrs"]),
    ({"firewall_ssh_cidrs": ["198.51.100.128/25"]}, []),  # narrowed
    ({"firewall_service_sources": ["0.0.0.0/0"]}, ["firewall_service_sources"]),
    ({"firewall_service_sources": ["10.0.1.10/32", "10.0.1.20/32"]}, ["firewall_service_sources"]),
], ids=lambda value: json.dumps(value))
def test_a_run_that_would_turn_off_tls_or_widen_who_connects_is_a_lowering(change, lowered):
    assert [c["setting"] for c in sortd_lowered(GUARDED, dict(GUARDED, **change))] == lowered


def test_confirmed_lowerings_pass_and_a_node_never_recorded_has_none():
    new = dict(GUARDED, lb_tls=False, firewall_ssh_cidrs=["0.0.0.0/0"])
    assert [c["setting"] for c in sortd_lowered(GUARDED, new, "lb_tls")] == ["firewall_ssh_cidrs"]
    assert sortd_lowered(GUARDED, new, "lb_tls, firewall_ssh_cidrs") == []
    assert sortd_lowered({}, new) == []
    # Raising is never a lowering: TLS turned on, a web node (None) that was never a load balancer.
    assert sortd_lowered(dict(GUARDED, lb_tls=False), GUARDED) == []
    assert sortd_lowered(dict(GUARDED, lb_tls=None, lb_hsts=None), dict(GUARDED, lb_tls=None, lb_hsts=None)) == []


def test_secrets_reach_the_run_encrypted_and_only_a_run_with_the_vaults_password_reads_them(tmp_path):
    password = tmp_path / "vault-password"
    password.write_text("correct horse")
    encrypted = subprocess.run(
        ["ansible-vault", "encrypt_string", "--vault-password-file", str(password), "--stdin-name",
         "prometheus_web_password"], input="s3cret-value", capture_output=True, text=True, check=True).stdout
    (tmp_path / "production.secrets.yaml").write_text(encrypted)
    cluster = write(tmp_path, {"nodes": [vagrant_node()], "secrets": "production.secrets.yaml"})
    listing = inventory(cluster, "--list", dotfile=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "s3cret-value" not in listing.stdout
    assert listing.stdout.count("$ANSIBLE_VAULT;") == 1

    def read(*args):  # debug runs on the control node: no node is contacted
        return subprocess.run(["ansible", "web-01", "-m", "ansible.builtin.debug", "-a",
                               "msg=[{{ prometheus_web_password }}]", *args], cwd=ROOT,
                              env=dict(os.environ, SORTD_CLUSTER=str(cluster), VAGRANT_DOTFILE_PATH=str(tmp_path),
                                       ANSIBLE_NOCOLOR="1"), capture_output=True, text=True)
    assert "[s3cret-value]" in read("--vault-password-file", str(password)).stdout
    denied = read()
    assert denied.returncode != 0 and "s3cret-value" not in denied.stdout + denied.stderr
    assert "vault" in denied.stdout + denied.stderr


@pytest.mark.parametrize("secrets, message", [
    ("prometheus_web_pasword: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  3031\n",
     "prometheus_web_pasword: no role has this secret; did you mean prometheus_web_password?"),
    ("prometheus_web_password: plain\n",
     "prometheus_web_password: not encrypted; write it with: ansible-vault encrypt_string --ask-vault-pass "
     "--name prometheus_web_password"),
    ("lb_tls: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  3031\n", "lb_tls: not a secret: it goes in settings"),
])
def test_a_secrets_file_with_a_misspelt_plain_or_public_setting_is_refused(tmp_path, secrets, message):
    (tmp_path / "secrets.yaml").write_text(secrets)
    cluster = write(tmp_path, {"nodes": [vagrant_node()], "secrets": "secrets.yaml"})
    result = inventory(cluster, "--check", dotfile=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == f"{tmp_path / 'secrets.yaml'}: {message}"
