"""``python -m tnfr_fastcache demo`` runs end to end and shows what it promises."""

import subprocess
import sys

from tnfr_fastcache.__main__ import main


def test_demo_in_a_subprocess_with_a_redis_tier(redis_url, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tnfr_fastcache", "demo", "--nodes", "300", "--redis", redis_url, "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tiers: memory -> disk -> redis" in out
    for label in ("cold", "warm, memory hit", "warm, disk hit", "node's EPI changed", "edge was added"):
        assert label in out
    assert "MB on disk" in out and "Cache Performance Report" in out
    assert any(tmp_path.rglob("*")), "--dir keeps the disk cache"


def test_demo_without_redis_uses_memory_and_disk(capsys, tmp_path):
    unreachable = "redis://127.0.0.1:1/0"
    # an explicit --redis that does not answer is a one-line error, not a silent fallback
    assert main(["demo", "--nodes", "100", "--redis", unreachable, "--dir", str(tmp_path)]) == 2
    assert "127.0.0.1:1 is unreachable" in capsys.readouterr().err
    assert main(["demo", "--nodes", "100"]) == 0
    assert "tiers: memory -> disk" in capsys.readouterr().out


def test_demo_rejects_a_network_too_small(capsys):
    assert main(["demo", "--nodes", "5"]) == 2
    assert "at least 20 nodes" in capsys.readouterr().err
