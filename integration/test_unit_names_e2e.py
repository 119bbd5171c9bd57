"""sdactivate's unit name rule against the release's own systemd: `systemd-analyze verify`
on 1,000 generated names (integration/probes/unit_name_differential.py, run inside the
booted tree with its Python)."""

from __future__ import annotations

import json
from collections.abc import Callable

from integration.helpers import PYTHON, sandbox_version
from integration.sandbox import CODE_DIR, Sandbox


def test_unit_names_match_the_releases_unit_name_is_valid(
    sandbox: Sandbox, measurements: Callable[[str], None]
) -> None:
    """0 mismatches on this release: templates, instances holding '@', every unit type,
    lengths 255 and 256."""
    probe = f"{CODE_DIR}/integration/probes/unit_name_differential.py"
    result = sandbox.run(
        [PYTHON, probe, "--count", "1000"],
        check=False,
        timeout=600,
        env={"PYTHONPATH": CODE_DIR},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, result.stdout + result.stderr
    report = json.loads(lines[-1][len("PROBE ") :])
    assert report["systemd"] == sandbox_version(sandbox)
    measurements(
        f"unit names {report['systemd']}: {report['checked']} checked, {report['valid']} valid"
        f" ({report['instances_with_at']} instances with '@'), {report['mismatches']} mismatches"
    )
    assert result.returncode == 0, json.dumps(report, indent=1, ensure_ascii=False)
    assert 0 < report["valid"] < report["checked"] and report["instances_with_at"] > 0
