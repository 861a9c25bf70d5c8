"""The command line, in a subprocess (``python -m tnfr_fastcache``) and in-process (``main``)."""

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tnfr_fastcache import CacheLevel
from tnfr_fastcache.__main__ import _Progress, main
from tnfr_fastcache.backends.disk import CompressedPersistentCache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    """``python -m tnfr_fastcache ARGS`` with pipes (so not a terminal)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "tnfr_fastcache", *map(str, args)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )


@pytest.fixture
def cache_dir(tmp_path):
    """A disk cache with 4 matrices (derived_metrics), 2 small values (temporary, one expired)."""
    path = tmp_path / "cache"
    cache = CompressedPersistentCache(path)
    for i in range(4):
        cache.set(("coherence", i), np.full((64, 64), float(i)), CacheLevel.DERIVED_METRICS,
                  dependencies=("graph_topology",), computation_cost=3.0)
    cache.set("small", {"si": 0.5}, "temporary")
    cache.set("short-lived", [1, 2, 3], "temporary", ttl=0.001)
    cache.close()
    time.sleep(0.01)
    return path


def _corrupt_one(path):
    cache = CompressedPersistentCache(path, create=False)
    target = next(e.path for e in cache.entries("derived_metrics"))
    cache.close()
    with open(target, "r+b") as f:
        f.seek(-16, os.SEEK_END)
        byte = f.read(1)
        f.seek(-16, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    return target


def test_stats_json(cache_dir):
    result = run("stats", cache_dir, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # piped: no progress
    stats = json.loads(result.stdout)
    dm = stats["levels"]["derived_metrics"]
    assert dm["entries"] == 4 and dm["raw_bytes"] == 4 * 64 * 64 * 8
    assert dm["compression_ratio"] > 10  # constant matrices compress
    assert dm["cost"] == 12.0
    assert stats["levels"]["temporary"]["entries"] == 2
    assert stats["levels"]["temporary"]["expired"] == 1
    assert stats["levels"]["graph_structure"]["entries"] == 0
    assert stats["total"]["entries"] == 6 == stats["disk_files"]
    assert stats["total"]["stored_bytes"] == stats["disk_size_bytes"]
    assert stats["tier"] == "disk" and stats["max_disk_mb"] is None


def test_stats_table(cache_dir, capsys):
    assert main(["stats", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "budget: unbounded" in out
    row = next(line for line in out.splitlines() if line.startswith("derived_metrics"))
    assert row.split()[1] == "4"
    assert any(line.startswith("total") and line.split()[1] == "6" for line in out.splitlines())


def test_ls(cache_dir, capsys):
    assert main(["ls", str(cache_dir), "--level", "DERIVED_METRICS"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["key", "level"]
    assert len(lines) == 5 and all(" derived_metrics " in line for line in lines[1:])
    assert main(["ls", str(cache_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 6
    assert {e["level"] for e in listed} == {"derived_metrics", "temporary"}
    assert all(len(e["key_hex"]) == 32 and os.path.isfile(e["path"]) for e in listed)
    assert listed[0]["dependencies"] in ([], ["graph_topology"])


def test_verify_clean_directory(cache_dir):
    result = run("verify", cache_dir)
    assert result.returncode == 0, result.stderr
    assert "6 entries verified, no problems" in result.stdout


def test_verify_finds_and_fixes_a_corrupted_entry(cache_dir):
    target = _corrupt_one(cache_dir)
    result = run("verify", cache_dir)
    assert result.returncode == 1
    assert target in result.stdout and "checksum" in result.stdout
    assert "run with --fix" in result.stdout
    assert os.path.exists(target)  # without --fix nothing is removed
    result = run("verify", cache_dir, "--fix", "--json")
    assert result.returncode == 1  # problems were found, even though they are now fixed
    report = json.loads(result.stdout)
    assert report["fixed"] and [p["path"] for p in report["problems"]] == [target]
    assert not os.path.exists(target)
    assert result.stderr == ""  # the library's warning stays quiet unless -v
    result = run("verify", cache_dir)
    assert result.returncode == 0 and "5 entries verified" in result.stdout


def test_verify_in_process_and_verbose_logs(cache_dir, capsys):
    _corrupt_one(cache_dir)
    assert main(["-v", "verify", str(cache_dir), "--fix"]) == 1
    captured = capsys.readouterr()
    assert "1 problem(s) in 6 entries, removed" in captured.out
    assert "corrupt" in captured.err  # -v shows the library's warning
    assert main(["verify", str(cache_dir)]) == 0


def test_gc_enforces_a_budget_and_drops_expired(cache_dir):
    result = run("gc", cache_dir, "--max-disk-mb", "1e-6", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["expired"] == 1
    assert report["evicted"] == 5 and report["disk_files"] == 0 and report["disk_size_bytes"] == 0
    stats = json.loads(run("stats", cache_dir, "--json").stdout)
    assert stats["total"]["entries"] == 0


def test_gc_without_budget_keeps_live_entries(cache_dir, capsys):
    assert main(["gc", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("expired 1, evicted 0")
    assert "now 5 entries" in out


def test_clear_one_level_then_all(cache_dir, capsys):
    assert main(["clear", str(cache_dir), "--level", "temporary"]) == 0
    assert capsys.readouterr().out == "removed 2 entries of level temporary\n"
    stats = json.loads(run("stats", cache_dir, "--json").stdout)
    assert stats["levels"]["temporary"]["entries"] == 0
    assert stats["levels"]["derived_metrics"]["entries"] == 4
    result = run("clear", cache_dir)
    assert result.returncode == 0 and result.stdout == "removed 4 entries\n"
    assert json.loads(run("stats", cache_dir, "--json").stdout)["total"]["entries"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["stats", "{missing}"], "no such directory"),
        (["ls", "{plain}"], "not a tnfr_fastcache disk cache"),
        (["clear", "{cache}", "--level", "derived"], "unknown cache level"),
        (["gc", "{cache}", "--max-disk-mb", "0"], "expected a number of MiB > 0"),
        (["gc", "{cache}", "--max-disk-mb", "lots"], "expected a number of MiB"),
        (["frobnicate", "{cache}"], "invalid choice"),
        ([], "required: COMMAND"),
    ],
)
def test_errors_are_one_line_and_exit_2(cache_dir, tmp_path, args, message):
    plain = tmp_path / "plain"
    plain.mkdir()
    names = {"missing": tmp_path / "nope", "plain": plain, "cache": cache_dir}
    result = run(*[a.format(**names) for a in args])
    assert result.returncode == 2
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr
    assert not (plain / "index.sqlite3").exists()  # a non-cache directory is left untouched


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("stats", "ls", "verify", "gc", "clear"):
        assert command in out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal():
    terminal, pipe = _Terminal(), io.StringIO()
    with _Progress("verifying 6 entries", stream=terminal):
        time.sleep(0.5)
    with _Progress("verifying 6 entries", stream=pipe):
        time.sleep(0.3)
    assert "verifying 6 entries ... " in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\033[K")  # the line is erased afterwards
    assert pipe.getvalue() == ""
