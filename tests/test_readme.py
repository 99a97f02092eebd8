"""The README is a contract. As a newcomer would: a fresh clone (with the
release build of this tree in it), the README's main command exactly as
written, in the clean environment of a fresh Debian host (Debian's own
python3, no PYTHONPATH, nothing of this machine's environment but HOME and
CI); then `curl localhost:8080` sorts, every API example of the README
prints the output the README shows, and the README's down command leaves no
process, namespace, port or file behind.

The clone compiles sortd alone and makes its own .venv."""

import os
import re
import shlex
import subprocess
import time
from fnmatch import fnmatchcase as fnmatch
from pathlib import Path

import pytest

from clusters import ROOT, SORT_BODY, SORTED, copy_release_build
from testlab import listening, node_forwards, vagrant_nodes
from testlab.hosts import DATA, RUN, cgroup_dirs

README = ROOT / "README.md"
# The PATH of a fresh Debian host, plus rustup's, which the README asks for.
CLEAN_PATH = f"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{Path.home()}/.cargo/bin"
LAB = "cluster"  # the lab scripts/local-cluster runs


def two_commands() -> dict[str, str]:
    """The README's table of two commands: {"main": ..., "test": ...}."""
    section = re.search(r"^## Two commands\n(.*?)^## ", README.read_text(), re.S | re.M).group(1)
    rows = [re.findall(r"`([^`]+)`", line.split("|")[-2]) for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|---")][1:]
    assert len(rows) == 2 and all(len(row) == 1 for row in rows), rows
    return {"main": rows[0][0], "test": rows[1][0]}


def down_command() -> str:
    found = re.findall(r"`(scripts/\S+ down)`", README.read_text())
    assert found, "the README names no down command"
    return found[0]


def api_examples() -> list[tuple[str, str]]:
    """Every `curl … localhost:8080 …` example of the README and docs/ with
    the output they give: `# OUTPUT` after it in a sh block (on its line or
    the next), or the line after `$ curl …` in a console block."""
    examples = []
    text = "".join(page.read_text() for page in [README, *sorted((ROOT / "docs").glob("*.md"))])
    for kind, block in re.findall(r"^```(sh|console)\n(.*?)^```", text, re.S | re.M):
        lines = block.splitlines()
        for index, line in enumerate(lines):
            if kind == "console":
                if line.startswith("$ curl") and "localhost:8080" in line:
                    examples.append((line[2:].strip(), lines[index + 1].strip()))
                continue
            if "curl" not in line or "localhost:8080" not in line:
                continue
            command, _, expected = line.partition(" # ")
            if not expected.strip() and index + 1 < len(lines) and lines[index + 1].lstrip().startswith("# "):
                expected = lines[index + 1].strip()[2:]
            if expected.strip():
                examples.append((command.strip(), expected.strip()))
    return examples


def check_api_examples(port: int) -> int:
    """Runs every API example of the README against 127.0.0.1:port instead
    of localhost:8080, as written otherwise; asserts each prints what the
    README says. Returns how many ran."""
    examples = api_examples()
    assert len(examples) >= 8
    for command, expected in examples:
        command = re.sub(r"\blocalhost:8080\b", f"127.0.0.1:{port}", command)
        answer = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
        assert answer.stdout.strip() == expected, f"{command}\nREADME: {expected}\ngot:    {answer.stdout}"
    return len(examples)


def clean_env() -> dict[str, str]:
    return {"HOME": str(Path.home()), "CI": os.environ.get("CI", ""), "PATH": CLEAN_PATH}


def sh(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in clean_env().items()), "sh", "-c", command],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def leftovers(clone: Path) -> list[str]:
    """What of the local cluster is still there after its down command."""
    found = []
    if Path(f"/run/netns/sortd-{LAB}").exists():
        found.append(f"network namespace sortd-{LAB}")
    for path in (RUN / LAB, DATA / LAB, *cgroup_dirs(f"sortd-testhosts/{LAB}")):
        if path.exists():
            found.append(str(path))
    for forward in (f for node in vagrant_nodes(ROOT / "cluster.json") for f in node_forwards(node)):
        if listening(forward.host_port, forward.host_ip):
            found.append(f"{forward.host_ip}:{forward.host_port} listening")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(clone) in text or f"sortd-testhosts/{LAB}" in text or f"sortd-{LAB}" in text:
            found.append(f"process {cmdline.parent.name}: {text[:200]}")
    return found


def test_readme_main_command_works_as_written_from_a_fresh_clone(tmp_path):
    commands = two_commands()
    examples = api_examples()
    assert len(examples) >= 8, examples  # the API section's examples were found
    clone = tmp_path / "sortd"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    # With this tree's release build, as a clone that has built before: the
    # command then compiles sortd alone, not every crate again. Every crate
    # built from a fresh clone is the gate's own first step; here it made
    # most of this test's 301 s in the last gate.
    copy_release_build(clone)
    try:
        started = time.monotonic()
        up = sh(commands["main"], clone, timeout=1500)
        took = time.monotonic() - started
        log = (up.stdout + up.stderr)[-8000:]
        assert up.returncode == 0, f"{commands['main']} exited {up.returncode}:\n{log}"
        assert "WARNING" not in up.stdout + up.stderr, log
        curl = sh(f"curl -s localhost:8080 -d {shlex.quote(SORT_BODY.decode())}", clone, timeout=30)
        assert curl.stdout == SORTED, curl

        for command, expected in examples:
            answer = sh(command, clone, timeout=30)
            assert answer.stdout.strip() == expected, f"{command}\nREADME: {expected}\ngot:    {answer.stdout}"
        print(f"README: {commands['main']} from a fresh clone: {took:.0f}s; {len(examples)} API examples as written")
    finally:
        down = sh(down_command(), clone, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(clone) == []


@pytest.mark.quick
def test_readme_layout_table_matches_the_tree():
    # Each row: its paths (files, or folders ending in "/"), and what its
    # second column names inside them. Every tracked file is named: by its
    # path, or inside a folder row that names it (itself, a folder it is in,
    # or, one folder down, its own folder: roles `web` for roles/web/...;
    # `test_*.py` names every test_ file).
    # A folder row that names nothing inside (examples/) covers its folder.
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", README.read_text(), re.S | re.M).group(1)
    rows = [(re.findall(r"`([^`]+)`", line.split("|")[1]), re.findall(r"`([^`]+)`", line.split("|")[2]))
            for line in section.splitlines() if line.startswith("| `")]
    named = {path for paths, _ in rows for path in paths}
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == [], f"the layout table names what the tree lacks: {missing}"

    def covered(file: str) -> bool:
        for paths, inside in rows:
            if file in paths:
                return True
            for folder in (path for path in paths if path.endswith("/") and file.startswith(path)):
                parts = file[len(folder):].split("/")
                spans = {"/".join(parts[:j]) for j in range(1, len(parts) + 1)}
                spans |= {"/".join(parts[1:j]) for j in range(2, len(parts))}
                if not inside or any(fnmatch(span, name.rstrip("/")) for span in spans for name in inside):
                    return True
        return False

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    unlisted = sorted(file for file in tracked.splitlines() if file != "README.md" and not covered(file))
    assert unlisted == [], f"the layout table does not say where these are: {unlisted}"
