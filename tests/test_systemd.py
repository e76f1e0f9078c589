"""deploy/systemd/device-cloud-exporter.service, the unit README.md's venv install uses.

`systemd-analyze verify` (in every Debian system with systemd) checks its syntax and options;
it needs ExecStart's program to exist, so it verifies a copy that starts this test's own
entry point. The tests also check that the unit starts what README.md installs, with flags the
exporter accepts.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import cli

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "device-cloud-exporter.service"
VENV = "/opt/device-cloud-exporter"


def directives() -> dict[str, str]:
    found = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found[key] = value
    return found


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian: apt-get install systemd)"
    program = Path(sys.executable).with_name("device-cloud-exporter")
    assert program.exists(), f"{program}: the package is not installed in this environment"
    copy = tmp_path / UNIT.name
    copy.write_text(
        UNIT.read_text(encoding="utf-8").replace(f"{VENV}/bin/device-cloud-exporter", str(program)),
        encoding="utf-8",
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    # Lines about other units on this machine are not about this file.
    ours = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not ours, result.stderr


def test_the_unit_starts_the_venv_readme_installs_with_valid_flags() -> None:
    argv = shlex.split(directives()["ExecStart"])
    assert argv[0] == f"{VENV}/bin/device-cloud-exporter"
    assert f"python3 -m venv {VENV}" in (ROOT / "README.md").read_text(encoding="utf-8")
    args = cli.build_parser().parse_args(argv[1:])
    assert args.config_file == "/etc/device-cloud-exporter/config.yaml"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),  # never root
        ("StateDirectory", "device-cloud-exporter"),  # writable, for oauth2 refresh_token_file
        ("ExecReload", "/bin/kill -HUP $MAINPID"),  # SIGHUP re-reads the configuration
        ("ProtectSystem", "strict"),
    ],
)
def test_the_unit_runs_unprivileged_and_reloads_with_sighup(key: str, value: str) -> None:
    assert directives().get(key) == value
