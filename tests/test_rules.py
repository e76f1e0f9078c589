"""Alerting rules, their promtool unit tests, the example configs and the Grafana dashboard.

Offline checks (no server): `promtool check rules`, `promtool test rules`, `promtool check
config`, `amtool check-config`, the generated files being up to date, and the structure of the
dashboard JSON. The real-stack proof (Prometheus + Alertmanager + exporter + simulated cloud)
is tests/system/test_stack.py. promtool and amtool come from Debian's `prometheus` and
`prometheus-alertmanager` packages; without them these tests FAIL, they do not skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana import generate_dashboard
from prometheus import generate_alerts
from prometheus.thresholds import load_thresholds

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
UNIT_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
DASHBOARD = ROOT / "grafana" / "dashboards" / "device-cloud.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
INSTALL_HINT = "install Debian's packages: apt-get install -y prometheus prometheus-alertmanager"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; {INSTALL_HINT}")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def alerts(rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules if "alert" in rule}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


# --------------------------------------------------------------------------- promtool


def test_promtool_check_rules_passes() -> None:
    result = run(tool("promtool"), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS, "no promtool unit tests in prometheus/tests/"
    result = run(tool("promtool"), "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """A wrong expectation must make promtool fail: the unit tests really compare."""
    source = (PROM_DIR / "tests" / "doors.yml").read_text(encoding="utf-8")
    broken = source.replace("name: Garage", "name: NotGarage", 1)
    assert broken != source
    test_file = tmp_path / "doors.yml"
    test_file.write_text(broken.replace("../alerts.yml", str(ALERTS)), encoding="utf-8")
    result = run(tool("promtool"), "test", "rules", str(test_file))
    assert result.returncode != 0
    assert "NotGarage" in result.stdout + result.stderr


def _alert_label_sets(case: dict[str, Any]) -> dict[str, list[tuple[str, frozenset]]]:
    """alertname -> [(eval_time, frozenset of firing label sets)] in time order."""
    evals: dict[str, list[tuple[float, frozenset]]] = defaultdict(list)
    for check in case.get("alert_rule_test", []):
        firing = frozenset(
            frozenset((alert.get("exp_labels") or {}).items())
            for alert in check.get("exp_alerts") or []
        )
        evals[check["alertname"]].append((_seconds(check["eval_time"]), firing))
    return {name: sorted(items, key=lambda item: item[0]) for name, items in evals.items()}


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", str(duration)))


def test_every_alert_is_unit_tested_firing_quiet_and_resolving(
    alerts: dict[str, dict[str, Any]],
) -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    resolves: set[str] = set()
    for path in UNIT_TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in doc["tests"]:
            for name, evals in _alert_label_sets(case).items():
                for i, (_, firing) in enumerate(evals):
                    if firing:
                        fires.add(name)
                        # resolves: an alert firing now is gone at a later evaluation
                        if any(firing - later for _, later in evals[i + 1 :]):
                            resolves.add(name)
                    else:
                        quiet.add(name)
    for label, covered in (("fire", fires), ("stay quiet", quiet), ("resolve", resolves)):
        missing = sorted(set(alerts) - covered)
        assert not missing, f"no promtool test shows these alerts {label}: {missing}"


# --------------------------------------------------------------------------- generated files


def test_alerts_yml_is_generated_from_thresholds() -> None:
    expected = generate_alerts.render(load_thresholds())
    assert ALERTS.read_text(encoding="utf-8") == expected, (
        "prometheus/alerts.yml is stale: run python -m prometheus.generate_alerts"
    )


def test_dashboard_json_is_generated_from_code() -> None:
    expected = generate_dashboard.render(load_thresholds())
    assert DASHBOARD.read_text(encoding="utf-8") == expected, (
        "grafana/dashboards/device-cloud.json is stale: run python -m grafana.generate_dashboard"
    )


@pytest.mark.parametrize("module", ["prometheus.generate_alerts", "grafana.generate_dashboard"])
def test_generators_run_as_documented_from_the_repository_root(module: str, tmp_path: Path) -> None:
    """`python -m <module> --check` passes on the committed file and fails on a stale one;
    run as a file (the command of earlier releases) it says in one line what to run instead."""

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    current = python("-m", module, "--check")
    assert current.returncode == 0, current.stderr
    stale = tmp_path / "stale"
    stale.write_text("old\n", encoding="utf-8")
    result = python("-m", module, "--check", "--output", str(stale))
    assert result.returncode == 1
    assert result.stderr == f"{stale} is out of date: run python -m {module}\n"
    as_file = python(module.replace(".", "/") + ".py", "--check")
    assert as_file.returncode == 1
    assert as_file.stderr == f"run from the repository root: python -m {module}\n"


def test_thresholds_change_the_generated_rules(tmp_path: Path) -> None:
    """Thresholds really live in thresholds.yml: changing one changes alerts and dashboard."""
    changed = dict(load_thresholds(), battery_low_ratio=0.33, door_open_critical_factor=6)
    text = generate_alerts.render(changed)
    assert "parqex_door_sensor_battery_ratio < 0.33" in text
    assert "below 33%" in text
    assert "* 6" in text
    dash = json.loads(generate_dashboard.render(changed))
    assert 0.33 in [
        step["value"]
        for panel in data_panels(dash)
        for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    ]


# --------------------------------------------------------------------------- alert conventions


def test_alerts_follow_mixin_conventions(alerts: dict[str, dict[str, Any]]) -> None:
    assert len(alerts) >= 12
    for name, rule in alerts.items():
        assert re.fullmatch(r"DeviceCloud(?:[A-Z][a-z0-9]*|LaMetric)+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "dashboard_url"} <= set(annotations), name
        assert "/d/device-cloud-exporter/" in annotations["dashboard_url"], name
    severities = {rule["labels"]["severity"] for rule in alerts.values()}
    assert severities == {"critical", "warning", "info"}


REQUIRED_ALERTS = {
    # alert -> (the _info metric it takes its human name from, label printed)
    "DeviceCloudDoorOpen": ("parqex_door_info", "name"),
    "DeviceCloudDoorOpenTooLong": ("parqex_door_info", "name"),
    "DeviceCloudDoorSensorBatteryLow": ("parqex_door_info", "name"),
    "DeviceCloudDoorSensorBatteryCritical": ("parqex_door_info", "name"),
    "DeviceCloudControllerNotSeen": ("parqex_device_info", "owner"),
    "DeviceCloudControllerInactive": ("parqex_device_info", "owner"),
    "DeviceCloudLaMetricDeviceBanned": ("lametric_device_info", "name"),
    "DeviceCloudLaMetricDeviceStuckNew": ("lametric_device_info", "name"),
}


def test_device_alerts_name_things_by_their_human_name(
    alerts: dict[str, dict[str, Any]],
) -> None:
    for name, (info, label) in REQUIRED_ALERTS.items():
        rule = alerts[name]
        assert re.search(rf"group_left \([^)]*\b{label}\b", rule["expr"]), name
        assert info in rule["expr"], name
        for annotation in ("summary", "description"):
            assert f"$labels.{label}" in rule["annotations"][annotation], (name, annotation)
            assert "$labels.door_id" not in rule["annotations"][annotation]


def test_door_open_uses_each_controllers_own_threshold(
    alerts: dict[str, dict[str, Any]],
) -> None:
    for name in ("DeviceCloudDoorOpen", "DeviceCloudDoorOpenTooLong"):
        expr = alerts[name]["expr"]
        assert "parqex_device_door_open_alert_threshold_seconds" in expr
        assert "parqex_door_open == 1" in expr
        # Range windows ([15m]: the collection grace period) are not door-open times.
        without_windows = re.sub(r"\[[0-9a-z]+\]", "", expr)
        assert not re.search(r"\b(900|15m)\b", without_windows), (
            f"{name} hard-codes a door-open time"
        )
    assert alerts["DeviceCloudDoorOpenTooLong"]["labels"]["severity"] == "critical"


def test_battery_alerts_require_a_bluetooth_sensor(alerts: dict[str, dict[str, Any]]) -> None:
    for name, severity in (
        ("DeviceCloudDoorSensorBatteryLow", "warning"),
        ("DeviceCloudDoorSensorBatteryCritical", "critical"),
    ):
        assert "parqex_door_bluetooth_sensor == 1" in alerts[name]["expr"]
        assert alerts[name]["labels"]["severity"] == severity


def test_account_down_describes_the_error_reasons(alerts: dict[str, dict[str, Any]]) -> None:
    description = alerts["DeviceCloudAccountDown"]["annotations"]["description"]
    assert "device_cloud_exporter_upstream_errors_total" in description
    assert ".Labels.reason" in description
    auth = alerts["DeviceCloudAccountAuthFailing"]
    assert 'reason=~"auth|token"' in auth["expr"]
    assert auth["labels"]["severity"] == "critical"


# --------------------------------------------------------------------------- example configs


def test_prometheus_example_config_is_valid() -> None:
    result = run(tool("promtool"), "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    thresholds = yaml.safe_load((PROM_DIR / "thresholds.yml").read_text(encoding="utf-8"))
    assert thresholds["exporter_job"] in jobs
    assert "alerts.yml" in config["rule_files"]


def test_alertmanager_example_config_is_valid() -> None:
    result = run(tool("amtool"), "check-config", str(PROM_DIR / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROM_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    hooks = [hook for r in config["receivers"] for hook in r.get("webhook_configs", [])]
    assert hooks
    assert all(hook.get("send_resolved") for hook in hooks)


def test_alertmanager_inhibits_flapping_where_the_account_is_down() -> None:
    """AccountFlapping is for accounts that fail often but not always; a dead one pages once."""
    config = yaml.safe_load((PROM_DIR / "alertmanager.yml").read_text(encoding="utf-8"))
    inhibiting = set()
    for rule in config["inhibit_rules"]:
        if rule["target_matchers"] == ['alertname="DeviceCloudAccountFlapping"']:
            assert set(rule["equal"]) == {"source", "account"}
            (source,) = rule["source_matchers"]
            match = re.fullmatch(r'alertname=~"(.*)"', source)
            assert match, source
            inhibiting |= set(match.group(1).split("|"))
    assert inhibiting == {"DeviceCloudAccountDown", "DeviceCloudAccountAuthFailing"}


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    datasources = yaml.safe_load(
        (ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/device-cloud.yml").read_text(encoding="utf-8")
    )
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    grafana_volumes = compose["services"]["grafana"]["volumes"]
    assert any(v.startswith("./grafana/dashboards:") and path in v for v in grafana_volumes)
    assert any(v.startswith("./grafana/provisioning:") for v in grafana_volumes)


# --------------------------------------------------------------------------- dashboard


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "device-cloud-exporter"
    assert "device-cloud-exporter" in dashboard["tags"]
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["title"]


def test_dashboard_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("account", "device"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DS
        assert var["includeAll"] and var["multi"]
        assert var["allValue"] == ".*"
    # Accounts come from both sources: a source without accounts does not empty the list.
    assert "parqex_up" in variables["account"]["query"]
    assert "lametric_up" in variables["account"]["query"]
    # Devices are listed by human name (regex text group), keyed by id.
    device = variables["device"]
    assert "parqex_device_info" in device["query"]
    assert "lametric_device_info" in device["query"]
    assert "(?<text>" in device["regex"]
    assert "(?<value>" in device["regex"]


def test_every_panel_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    panels = data_panels(dashboard)
    assert len(panels) >= 15
    for panel in panels:
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DS, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_dashboard_has_the_promised_panels(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "At a glance",
        "Doors",
        "ParqEx controllers",
        "LaMetric devices",
        "Exporter health",
    ]
    by_title = {p["title"]: p for p in data_panels(dashboard)}
    for title in (
        "Doors open",
        "Lowest sensor battery",
        "Controllers not seen",
        "LaMetric devices banned",
        "Accounts failing",
    ):
        assert by_title[title]["type"] == "stat", title
    assert by_title["Door state over time"]["type"] == "state-timeline"
    assert by_title["Door sensor battery"]["type"] == "timeseries"
    assert by_title["Controller last contact age"]["type"] == "timeseries"
    assert "lametric_device_state" in by_title["LaMetric devices by state"]["targets"][0]["expr"]
    health = " ".join(
        t["expr"]
        for title in ("Exporter", "Collection duration", "Upstream errors by reason")
        for t in by_title[title]["targets"]
    )
    for metric in ("up{", "scrape_duration_seconds", "upstream_errors_total"):
        assert metric in health
    door_table = by_title["Doors"]
    assert door_table["type"] == "table"
    organize = next(t for t in door_table["transformations"] if t["id"] == "organize")
    assert set(organize["options"]["renameByName"].values()) >= {
        "Door",
        "State",
        "Open for",
        "Sensor battery",
        "Last toggled",
    }


def test_dashboard_shows_human_names_not_ids(dashboard: dict[str, Any]) -> None:
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            legend = target.get("legendFormat", "")
            assert "_id" not in legend, (panel["title"], legend)
            if "{{name}}" in legend or "{{owner}}" in legend:
                assert re.search(r"group_left \((name|owner)\b", target["expr"]), panel["title"]
                assert "_info" in target["expr"], panel["title"]
        if panel["type"] == "table":
            organize = next(t for t in panel["transformations"] if t["id"] == "organize")
            hidden = organize["options"]["excludeByName"]
            assert hidden.get("door_id") and hidden.get("device_id"), panel["title"]
            shown = organize["options"]["renameByName"]
            assert "name" in shown or "owner" in shown, panel["title"]
            # every query carries the name, so the merged rows all have one
            for target in panel["targets"]:
                assert re.search(r"group_left \((name|owner)\b", target["expr"]), panel["title"]
                assert target.get("format") == "table" and target.get("instant")


SELECTOR = re.compile(r"\b((?:parqex|lametric)_(?:device|door)_[a-z_]+)\s*(\{[^}]*\})?")


def test_device_queries_follow_the_account_and_device_variables(
    dashboard: dict[str, Any],
) -> None:
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            for metric, matchers in SELECTOR.findall(target["expr"]):
                assert matchers, f"{panel['title']}: bare {metric}"
                assert 'account=~"$account"' in matchers, (panel["title"], metric)
                assert 'device_id=~"$device"' in matchers, (panel["title"], metric)


def test_dashboard_grid_has_no_overlaps(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def substitute_grafana_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace $var / ${var} / ${var:fmt} with test values; fail on an unknown variable."""
    values = {
        "account": ".*",
        "device": ".*",
        "job": "device-cloud-exporter",
        "__rate_interval": "1m",
        "__interval": "15s",
        "__range": "1h",
        **(values or {}),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$([A-Za-z_]\w*)", replace, expr)


def grafana_queries_as_promql(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and variable query, variables substituted.

    Grafana's variable functions become the PromQL they stand for: query_result(X) -> X,
    label_values(S, l) -> group by (l) (S).
    """
    out = []
    for panel in data_panels(dashboard):
        for target in panel["targets"]:
            out.append((f"{panel['title']}/{target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]
        if m := re.fullmatch(r"query_result\((.*)\)", query, re.S):
            query = m.group(1)
        elif m := re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query, re.S):
            query = f"group by ({m.group(2)}) ({m.group(1)})"
        out.append((f"variable {var['name']}", query))
    return [(where, substitute_grafana_variables(expr)) for where, expr in out]


def test_every_dashboard_expression_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Every query (variables substituted) compiles as PromQL, checked by promtool."""
    queries = grafana_queries_as_promql(dashboard)
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"dashboard:query_{i}", "expr": expr}
                            for i, (_, expr) in enumerate(queries)
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    result = run(tool("promtool"), "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_generators_refuse_a_bad_thresholds_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One reader checks thresholds.yml for the alerts and the dashboard alike; the user gets
    one line naming the file and the problem, and exit status 1, not a traceback."""
    bad = tmp_path / "thresholds.yml"
    text = (PROM_DIR / "thresholds.yml").read_text(encoding="utf-8")
    bad.write_text(text.replace("battery_critical_ratio:", "battery_critical_ratio: 0.9 #"))
    for module in (generate_alerts, generate_dashboard):
        out = tmp_path / f"{module.__name__}.out"
        assert module.main(["--thresholds", str(bad), "--output", str(out)]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"error: {bad}: ") and "battery_critical_ratio must be below" in line
        assert not out.exists()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("account_down_for", "11m", "account_down_window + account_down_for"),
        ("exporter_down_for", "15m", "exporter_down_for"),
        ("exporter_absent_for", "20m", "exporter_absent_for"),
    ],
)
def test_thresholds_refuse_an_account_or_exporter_alert_slower_than_the_grace_period(
    tmp_path: Path, key: str, value: str, named: str
) -> None:
    """Past collection_grace device alerts end: AccountDown/ExporterDown/Absent must fire first."""
    text = (PROM_DIR / "thresholds.yml").read_text(encoding="utf-8")
    bad = tmp_path / "thresholds.yml"
    bad.write_text(re.sub(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.M), encoding="utf-8")
    assert bad.read_text(encoding="utf-8") != text
    with pytest.raises(
        ValueError, match=re.escape(named) + " must be shorter than collection_grace"
    ):
        load_thresholds(bad)
    load_thresholds(PROM_DIR / "thresholds.yml")  # the shipped values pass


def test_dashboard_draws_a_gap_in_collection_as_a_gap(dashboard: dict[str, Any]) -> None:
    """No line or state is interpolated across the time an account was not collected."""
    graphs = [p for p in data_panels(dashboard) if p["type"] in ("timeseries", "state-timeline")]
    assert len(graphs) >= 5
    for panel in graphs:
        assert panel["fieldConfig"]["defaults"]["custom"]["spanNulls"] is False, panel["title"]


def test_dashboard_stats_say_when_their_data_is_older_than_the_grace_period(
    dashboard: dict[str, Any],
) -> None:
    thresholds = yaml.safe_load((PROM_DIR / "thresholds.yml").read_text(encoding="utf-8"))
    grace = thresholds["collection_grace"]
    device_stats = [
        p
        for p in data_panels(dashboard)
        if p["type"] == "stat" and any(SELECTOR.search(t["expr"]) for t in p["targets"])
    ]
    assert {p["title"] for p in device_stats} >= {
        "Doors open",
        "Doors open too long",
        "Lowest sensor battery",
        "Controllers not seen",
        "LaMetric devices banned",
    }
    for panel in device_stats:
        # The last collected values bridge a gap for the grace period, as in the alerts...
        for target in panel["targets"]:
            assert f"[{grace}])" in target["expr"], panel["title"]
            assert "== 1)" in target["expr"] and "_up{" in target["expr"], panel["title"]
        # ...and past it the stat says so instead of showing nothing or a stale number.
        assert panel["fieldConfig"]["defaults"]["noValue"] == f"no data for {grace}"
    by_title = {p["title"]: p for p in data_panels(dashboard)}
    age = by_title["Time since last successful collection"]
    steps = age["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"value": _seconds(grace), "color": "red"}
    for target in age["targets"]:
        # still shown when the exporter is down and its series are stale
        assert "last_over_time(" in target["expr"]
