#!/usr/bin/env python3
"""Ansible dynamic inventory for sortd, read from cluster.json.

cluster.json (or the file named by $SORTD_CLUSTER) is the one description of
an environment: its nodes and its settings. This script only translates it,
and it is also the one place that checks it: the Vagrantfile runs
`inventory.py --check` and the local test hosts read it through this module,
so a bad file fails with the same message everywhere. The rules are the JSON
Schema in cluster.schema.json, plus what a schema cannot say (unique names and
ports, how Ansible reaches each node, and each setting's name and type, which
the roles' meta/argument_specs.yaml own).

- Settings become group variables: "all" for every node, a group's for its
  nodes. They outrank the roles' defaults; -e outranks them.
- Secrets (the settings the roles' specs mark no_log) live in the file that
  "secrets" names, each value encrypted by `ansible-vault encrypt_string`:
  they reach Ansible still encrypted, as variables of every node, and only
  the run that has the vault's password decrypts them.

- A Vagrant node (no "ssh" block) is reached on 127.0.0.1 at the forwarded
  host port of guest port 22, as user vagrant, with the key Vagrant made:
  .vagrant/machines/<name>/<provider>/private_key, for whichever provider
  exists ($VAGRANT_DOTFILE_PATH moves .vagrant, as it does for Vagrant).
- A cloud node is reached at its ssh host, port, user and key, and its host
  key is checked against ~/.ssh/known_hosts, or the block's known_hosts file.
- A node on a private network is reached through its ssh block's `jump`: a
  bastion that is another node of the file (reached as that node is: `ssh -W`
  through it, with its key and known_hosts) or an address, [user@]host[:port]
  (ssh's ProxyJump, with your ssh configuration's key). One hop. Its SSH
  connection is shared under a name that includes the route: Ansible's own
  names only the address, port and user, and private addresses repeat
  between environments (staging's 10.0.1.11 is not production's).

Usage: inventory.py --list | --host NAME | --check
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import ipaddress
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent
SCHEMA = PROJECT / "cluster.schema.json"
ROLES = PROJECT / "ansible" / "roles"
DEFAULT_GROUPS = ["web"]
VAGRANT_PROVIDERS = ["virtualbox", "libvirt"]
# ssh's ProxyJump destination: [user@]host[:port]
JUMP_ADDRESS = re.compile(r"(?:[^@\s]+@)?(?:\[[0-9a-fA-F:]+\]|[^@\s:\[\]]+)(?::\d{1,5})?")


def cluster_path() -> Path:
    return Path(os.environ.get("SORTD_CLUSTER") or PROJECT / "cluster.json")


def node_label(nodes: list, index: int) -> str:
    node = nodes[index] if index < len(nodes) else None
    name = node.get("host_name") if isinstance(node, dict) else None
    return f"node {index} ({name})" if isinstance(name, str) else f"node {index}"


def describe(error, document: dict) -> str:
    """One schema error as 'node 0 (web-01): port_mappings[1].host_port: ...'."""
    path = list(error.absolute_path)
    where = []
    if len(path) >= 2 and path[0] == "nodes":
        where.append(node_label(document["nodes"], path[1]))
        path = path[2:]
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")
    if error.validator == "required":
        missing = error.message.split("'")[1]
        field = f"{field}.{missing}".lstrip(".")
        message = "missing"
    elif error.validator == "additionalProperties":
        message = error.message.replace("Additional properties are not allowed", "unknown field")
    else:
        message = error.message
    if field:
        where.append(field)
    return ": ".join([*where, message])


def load_cluster(path: Path) -> list[dict[str, Any]]:
    """The nodes of a cluster file, checked, with defaults filled in.
    Any problem exits with a message naming the file, node and field."""
    return load_environment(path)[0]


def load_settings(path: Path) -> dict[str, dict[str, Any]]:
    """The settings of a cluster file, checked: {group or "all": {name: value}}
    (without its secrets: secrets_file)."""
    return _environment(path)[1]


def secrets_file(path: Path, document: dict[str, Any] | None = None) -> Path | None:
    """The secrets file a cluster file names, if any, as an absolute path."""
    name = (document if document is not None else json.loads(path.read_text())).get("secrets")
    return None if name is None else Path(resolve(path, name))


def load_environment(path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """A cluster file's nodes (defaults filled in) and settings, checked;
    its secrets, still encrypted, are among the settings of "all"."""
    nodes, settings, secrets = _environment(path)
    if secrets:
        settings = dict(settings, all={**settings.get("all", {}), **secrets})
    return nodes, settings


def _environment(path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
    """A cluster file's nodes, its settings and its secrets, each checked."""
    try:
        import jsonschema
    except ImportError:
        raise SystemExit("inventory.py needs jsonschema: pip install jsonschema "
                         "(or apt install python3-jsonschema)")
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise SystemExit(f"{path}: cannot read: {error.strerror}")
    except json.JSONDecodeError as error:
        raise SystemExit(f"{path}: not valid JSON: {error}")
    validator = jsonschema.Draft202012Validator(
        json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise SystemExit("\n".join(f"{path}: {describe(e, document)}" for e in errors))
    nodes = [dict(node, groups=node.get("groups", DEFAULT_GROUPS)) for node in document["nodes"]]
    settings = document.get("settings", {})
    problems = check_cluster(nodes) + check_settings(settings)
    if problems:
        raise SystemExit("\n".join(f"{path}: {problem}" for problem in problems))
    secrets = secrets_file(path, document)
    for node in nodes:
        if "ssh" in node:
            node["ssh"] = dict(node["ssh"], **{field: resolve(path, node["ssh"][field])
                                               for field in ("key", "known_hosts") if field in node["ssh"]})
    return nodes, settings, {} if secrets is None else load_secrets(secrets)


def load_secrets(path: Path) -> dict[str, dict[str, str]]:
    """A secrets file's values as Ansible reads a vault-encrypted value in an
    inventory's JSON; each name checked against the roles' secret settings."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!vault", lambda loader, node: {"__ansible_vault": loader.construct_scalar(node)})
    try:
        secrets = yaml.load(path.read_text(), Loader=Loader) or {}
    except OSError as error:
        raise SystemExit(f"{path}: cannot read the secrets file: {error.strerror}")
    except yaml.YAMLError as error:
        raise SystemExit(f"{path}: not valid YAML: {error}")
    if not isinstance(secrets, dict):
        raise SystemExit(f"{path}: not a mapping of NAME: !vault VALUE")
    options = role_options()
    known = [name for name, spec in options.items() if spec.get("no_log")]
    problems = []
    for name, value in secrets.items():
        if name not in known:
            why = "not a secret: it goes in settings" if name in options else "no role has this secret"
            problems.append(f"{name}: {why}{did_you_mean(name, known) if name not in options else ''}")
        elif not (isinstance(value, dict) and value.get("__ansible_vault", "").startswith("$ANSIBLE_VAULT;")):
            problems.append(f"{name}: not encrypted; write it with: "
                            f"ansible-vault encrypt_string --ask-vault-pass --name {name}")
    if problems:
        raise SystemExit("\n".join(f"{path}: {problem}" for problem in problems))
    return secrets


def resolve(cluster_file: Path, name: str) -> str:
    """A path from a cluster file: ~ expanded, relative to the file's folder."""
    path = Path(name).expanduser()
    return str(path if path.is_absolute() else (cluster_file.parent / path).resolve())


def check_cluster(nodes: list[dict[str, Any]]) -> list[str]:
    """The rules a schema cannot express."""
    problems = []
    seen_names: dict[str, int] = {}
    seen_ports: dict[tuple[str, int], str] = {}
    for index, node in enumerate(nodes):
        label = node_label(nodes, index)
        name = node["host_name"]
        if name in seen_names:
            problems.append(f"{label}: host_name: {name!r} is also node {seen_names[name]}'s")
        seen_names.setdefault(name, index)
        mappings = node.get("port_mappings", [])
        for m, mapping in enumerate(mappings):
            key = (mapping.get("host_ip", "127.0.0.1"), mapping["host_port"])
            if key in seen_ports:
                problems.append(f"{label}: port_mappings[{m}].host_port: {key[0]}:{key[1]} "
                                f"is already forwarded to {seen_ports[key]}")
            seen_ports.setdefault(key, name)
        if "ssh" not in node and not any(m["guest_port"] == 22 for m in mappings):
            problems.append(f"{label}: port_mappings: a Vagrant node needs a mapping for guest_port 22 "
                            "(or give the node an ssh block if it is not a Vagrant VM)")
    by_name = {node["host_name"]: node for node in nodes}
    for index, node in enumerate(nodes):
        jump = node.get("ssh", {}).get("jump")
        if jump is not None:
            problems += [f"{node_label(nodes, index)}: ssh.jump: {problem}" for problem in check_jump(node, jump, by_name)]
    return problems


def check_jump(node: dict[str, Any], jump: str, nodes: dict[str, dict[str, Any]]) -> list[str]:
    """A bastion is another node, reached directly, or an ssh address."""
    if jump == node["host_name"]:
        return ["a node cannot be its own jump host"]
    if jump in nodes:
        hop = nodes[jump].get("ssh", {}).get("jump")
        return [f"{jump!r} is itself reached through {hop!r}: one jump host only"] if hop else []
    close = difflib.get_close_matches(jump, list(nodes), n=1, cutoff=0.75)
    if close and not any(mark in jump for mark in ".@:"):
        return [f"no node is named {jump!r}; did you mean {close[0]}?"]
    if not JUMP_ADDRESS.fullmatch(jump):
        return [f"{jump!r} is neither a node's host_name nor an address [user@]host[:port]"]
    return []


def role_options() -> dict[str, dict[str, Any]]:
    """Every variable the roles declare (meta/argument_specs.yaml), with its spec."""
    try:
        import yaml
    except ImportError:
        raise SystemExit("inventory.py needs PyYAML to read the roles' settings: pip install pyyaml "
                         "(or apt install python3-yaml)")
    options: dict[str, dict[str, Any]] = {}
    for specs in sorted(ROLES.glob("*/meta/argument_specs.yaml")):
        for entry_point in yaml.safe_load(specs.read_text())["argument_specs"].values():
            for name, spec in (entry_point.get("options") or {}).items():
                options.setdefault(name, spec)
    return options


# argument_specs types -> the JSON values that are of that type.
SPEC_TYPES = {
    "str": lambda v: isinstance(v, str),
    "path": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "raw": lambda v: True,
}


def did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def check_settings(settings: dict[str, dict[str, Any]]) -> list[str]:
    """Each setting's group, name and type, against the roles' argument specs."""
    problems = []
    scopes = ["all", *known_groups()]
    options = role_options() if settings else {}
    for scope, values in settings.items():
        if scope not in scopes:
            problems.append(f"settings.{scope}: not a group (one of {', '.join(scopes)})"
                            f"{did_you_mean(scope, scopes)}")
            continue
        for name, value in values.items():
            where = f"settings.{scope}.{name}"
            spec = options.get(name)
            if spec is None:
                problems.append(f"{where}: no role has this setting{did_you_mean(name, list(options))}")
                continue
            kind = spec.get("type", "str")
            if not SPEC_TYPES[kind](value):
                problems.append(f"{where}: {json.dumps(value)} is not of type {kind}")
            elif kind == "list" and "elements" in spec and not all(SPEC_TYPES[spec["elements"]](item)
                                                                   for item in value):
                problems.append(f"{where}: {json.dumps(value)} is not a list of {spec['elements']}")
            elif "choices" in spec and value not in spec["choices"]:
                problems.append(f"{where}: {json.dumps(value)} is not one of {spec['choices']}")
    return problems


def vagrant_dotfile() -> Path:
    """Vagrant's .vagrant folder of this project, or $VAGRANT_DOTFILE_PATH."""
    dotfile = Path(os.environ.get("VAGRANT_DOTFILE_PATH") or PROJECT / ".vagrant")
    return dotfile if dotfile.is_absolute() else PROJECT / dotfile


def vagrant_key(name: str) -> str:
    """The key Vagrant made for the node, for whichever provider exists."""
    machine = vagrant_dotfile() / "machines" / name
    for provider in VAGRANT_PROVIDERS:
        key = machine / provider / "private_key"
        if key.exists():
            return str(key)
    return str(machine / VAGRANT_PROVIDERS[0] / "private_key")


def host_vars(node: dict[str, Any], nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """How Ansible reaches a node (`nodes`: the file's, where its jump host is)."""
    private_ips = [net["ip"] for net in node.get("network_configs", [])]
    if "ssh" in node:
        ssh = node["ssh"]
        private_ip = ssh.get("private_ip") or (private_ips[0] if private_ips else None)
        variables = {
            "ansible_host": ssh["host"],
            "ansible_port": ssh.get("port", 22),
            "ansible_user": ssh["user"],
            "ansible_ssh_private_key_file": ssh["key"],
        }
        # One host variable, so the host key check and the jump go together.
        options = [f"UserKnownHostsFile={ssh['known_hosts']}"] if "known_hosts" in ssh else []
        if "jump" in ssh:
            options.append(proxy_option(ssh["jump"], nodes or []))
        if options:
            variables["ansible_ssh_common_args"] = shlex.join(
                [part for option in options for part in ("-o", option)])
    else:
        ssh_port = next(m["host_port"] for m in node["port_mappings"] if m["guest_port"] == 22)
        private_ip = private_ips[0] if private_ips else None
        variables = {
            "ansible_host": "127.0.0.1",
            "ansible_port": ssh_port,
            "ansible_user": "vagrant",
            "ansible_ssh_private_key_file": vagrant_key(node["host_name"]),
            # Local VMs get new host keys whenever they are recreated.
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }
    # ssh's own name for a shared connection (address, port, user) does not
    # tell nodes apart: two environments put web-01 at one private address
    # behind their own bastions, and 127.0.0.1:22003 is a Vagrant VM's
    # forwarded port as well as a local test cluster's. A run within
    # ControlPersist of a run for the other would go through the other's
    # connection, to the other's node. The whole route names it: the ssh
    # options (the jump, the host key file), address, port, user and key.
    route = json.dumps([variables.get("ansible_ssh_common_args", ""), variables["ansible_host"],
                        variables["ansible_port"], variables["ansible_user"], variables["ansible_ssh_private_key_file"]])
    variables["ansible_control_path"] = "%(directory)s/" + hashlib.sha256(route.encode()).hexdigest()[:16]
    if private_ip:
        variables["sortd_private_ip"] = str(ipaddress.ip_address(private_ip))
    return variables


def proxy_option(jump: str, nodes: list[dict[str, Any]]) -> str:
    """The ssh option that reaches a host through `jump`: a node of the file
    is reached as Ansible reaches it (`ssh -W`, with its key, port and host
    key check, which ProxyJump cannot give a jump host); an address is ssh's
    ProxyJump."""
    bastion = next((n for n in nodes if n["host_name"] == jump), None)
    if bastion is None:
        return f"ProxyJump={jump}"
    through = host_vars(bastion)
    command = ["ssh", "-W", "%h:%p", "-p", str(through["ansible_port"]),
               "-i", through["ansible_ssh_private_key_file"], "-o", "IdentitiesOnly=yes",
               "-o", "BatchMode=yes", *shlex.split(through.get("ansible_ssh_common_args", "")),
               f"{through['ansible_user']}@{through['ansible_host']}"]
    return f"ProxyCommand={shlex.join(command)}"


def known_groups() -> list[str]:
    """The groups a node may be in, as the schema lists them."""
    return json.loads(SCHEMA.read_text())["$defs"]["group"]["enum"]


def inventory(nodes: list[dict[str, Any]], settings: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    # Every group the playbook names exists, empty or not, so a cluster
    # without a load balancer runs its play without a warning.
    groups: dict[str, Any] = {group: {"hosts": []} for group in known_groups()}
    for node in nodes:
        for group in node["groups"]:
            groups.setdefault(group, {"hosts": []})["hosts"].append(node["host_name"])
    for scope, values in (settings or {}).items():
        if values:
            groups.setdefault(scope, {})["vars"] = values
    return {**groups, "_meta": {"hostvars": {n["host_name"]: host_vars(n, nodes) for n in nodes}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="the whole inventory (Ansible)")
    action.add_argument("--host", metavar="NAME", help="one host's variables (Ansible)")
    action.add_argument("--check", action="store_true", help="check the cluster file, print its nodes")
    args = parser.parse_args()
    path = cluster_path()
    nodes, settings = load_environment(path)
    if args.list:
        print(json.dumps(inventory(nodes, settings), indent=2))
    elif args.host:
        node = next((n for n in nodes if n["host_name"] == args.host), None)
        if node is None:
            raise SystemExit(f"{path}: no node named {args.host!r}")
        print(json.dumps(host_vars(node, nodes), indent=2))
    else:
        count = sum(len(values) for values in settings.values())
        print(f"{path}: {len(nodes)} node(s): {', '.join(n['host_name'] for n in nodes)}; {count} setting(s)")


if __name__ == "__main__":
    main()
