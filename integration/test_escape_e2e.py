"""sdactivate's systemd-escape functions against the release's own `systemd-escape`: escape,
--path, --unescape and --unescape --path, 1,500 generated inputs each
(integration/probes/escape_differential.py, run inside the booted tree with its Python)."""

from __future__ import annotations

import json
from collections.abc import Callable

from integration.helpers import PYTHON, sandbox_version
from integration.sandbox import CODE_DIR, Sandbox


def test_escaping_matches_the_releases_systemd_escape(
    sandbox: Sandbox, measurements: Callable[[str], None]
) -> None:
    """0 mismatches in every direction on this release; the only allowed divergence (a
    result that is not UTF-8, which a str function refuses) is counted, not hidden."""
    probe = f"{CODE_DIR}/integration/probes/escape_differential.py"
    result = sandbox.run(
        [PYTHON, probe, "--count", "1500"],
        check=False,
        timeout=600,
        env={"PYTHONPATH": CODE_DIR},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, result.stdout + result.stderr
    report = json.loads(lines[-1][len("PROBE ") :])
    assert report.pop("systemd") == sandbox_version(sandbox)
    measurements(
        f"systemd-escape {sandbox_version(sandbox)}: "
        + ", ".join(
            f"{mode} {r['checked']} checked, {r['refused_by_systemd']} refused,"
            f" {r['not_utf8']} not UTF-8, {r['mismatches']} mismatches"
            for mode, r in report.items()
        )
    )
    assert result.returncode == 0, json.dumps(report, indent=1, ensure_ascii=False)
