"""The README's first command on a stock Debian Python, as a new user runs it from a fresh tree.

Debian 12, Ubuntu 24.04 and Raspberry Pi OS mark their Python as externally managed (PEP 668):
``pip install`` outside a virtual environment stops at once. The command must still install and
bring the demo up with nothing but the system's directories on ``PATH``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO, free_consecutive_ports, free_port, wait_until
from tests.test_demo import FARMS

SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def readme_commands() -> list[str]:
    """The two set-up commands at the top of the README, without their comments."""
    block = re.search(r"```sh\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "the README starts with a sh block of set-up commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_second() -> None:
    demo, tests = readme_commands()
    assert demo.endswith("kubmesh demo") and "sudo" not in demo and "activate" not in demo
    assert tests in (REPO / ".ci" / "run").read_text(encoding="utf-8").replace("exec ", "")


def fresh_tree(target: Path) -> Path:
    """The files of this checkout a clone would hold (tracked, or new and not ignored), without .venv."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.timeout(900)
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no system Python at /usr/bin/python3")
def test_first_readme_command_brings_the_demo_up_with_only_the_system_python(tmp_path: Path) -> None:
    marker = next(SYSTEM_PYTHON.parent.parent.glob("lib/python3*/EXTERNALLY-MANAGED"), None)
    tree = fresh_tree(tmp_path / "kubmesh")
    ports = {name: free_port() for name in ("mqtt", "api", "web")}
    ports |= {name: free_consecutive_ports(len(FARMS)) for name in ("agent", "modbus", "control")}
    demo_command = readme_commands()[0] + " " + " ".join(
        f"--{name}-port {port}" for name, port in ports.items()) + " --poll-interval 1"
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
    log_path = tmp_path / "demo.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["bash", "-c", demo_command], cwd=tree, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            credentials = tree / "kubmesh-data" / "credentials.json"
            wait_until(lambda: credentials.exists() or process.poll() is not None, 600, interval=0.5,
                       what="the demo's credentials")
            assert process.poll() is None, log_path.read_text(errors="replace")
            token = json.loads(credentials.read_text())["api"]["token"]
            request = urllib.request.Request(f"http://127.0.0.1:{ports['api']}/api/farms",
                                             headers={"Authorization": f"Bearer {token}"})

            def farms_online() -> bool:
                farms = json.load(urllib.request.urlopen(request, timeout=5))["farms"]
                return {farm["farm_id"]: farm["online"] for farm in farms} == dict.fromkeys(FARMS, True)

            wait_until(farms_online, 60, interval=0.5, what="every demo farm online")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
    venv_python = tree / ".venv" / "bin" / "python"
    assert venv_python.exists()
    base = subprocess.run([str(venv_python), "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert base == "/usr", f"the environment was made from {base}, not the system Python"
    if marker:  # the system Python itself still refuses, so the command did not get round it by luck
        refused = subprocess.run([str(SYSTEM_PYTHON), "-m", "pip", "install", "--dry-run", "six"],
                                 env=env, capture_output=True, text=True)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0 and ("externally-managed-environment" in said or "No module named pip" in said)
