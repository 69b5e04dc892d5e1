"""The soak command itself, in a short run: it must pass and say so."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_passes(tmp_path, redis_server):
    report = tmp_path / "soak.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--duration", "15", "--clients", "8", "--database", "sqlite", "--report", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = report.read_text()
    assert "**Result: PASSED**" in text
    assert "Redis stopped" in text and "config.toml edited" in text
    for check in ("reload applied on every worker", "throttling back after redis restart", "no client side error"):
        assert f"| {check} | yes |" in text, text
