"""The benchmark tooling: the compare table and the documented regression workflow."""

import json

import pytest

from tnfr_fastcache import bench

pytest_plugins = ["pytester"]

BENCH_FILE = """
import os, time
import pytest

DELAY = float(os.environ.get("OURS_DELAY", "0.002"))

@pytest.mark.benchmark(group="sleep")
def test_ours(benchmark):
    benchmark.extra_info["subject"] = "ours"
    benchmark.extra_info["nbytes"] = 1_000_000
    benchmark.pedantic(time.sleep, args=(DELAY,), rounds=5, iterations=1)

@pytest.mark.benchmark(group="sleep")
def test_peer(benchmark):
    benchmark.extra_info["subject"] = "slowpeer"
    benchmark.pedantic(time.sleep, args=(0.004,), rounds=5, iterations=1)
"""


def _run_json(pytester, name):
    pytester.makepyfile(bench_sleep=BENCH_FILE)
    out = pytester.path / name
    result = pytester.runpytest_subprocess("bench_sleep.py", f"--benchmark-json={out}", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    return out


def test_compare_builds_ratio_rows_from_a_real_run(pytester):
    run = _run_json(pytester, "run.json")
    machine, benchmarks = bench.load_run(run)
    rows = bench.ratio_rows(benchmarks)
    assert len(rows) == 1
    row = rows[0]
    assert (row["group"], row["ours"], row["peer"]) == ("sleep", "ours", "slowpeer")
    # sleeping 2 ms vs 4 ms: the peer takes longer, so we are faster by well over 1x
    assert 1.3 < row["speedup"] < 2.5
    assert row["ours_gb_per_s"] == pytest.approx(1e6 / row["ours_median_s"] / 1e9)
    assert "Python" in machine
    table = bench.format_table(rows, machine)
    assert table.splitlines()[0].startswith("Machine: ")
    assert "| sleep | ours |" in table and "slowpeer" in table


def test_compare_cli_prints_table_and_json(pytester, capsys):
    run = _run_json(pytester, "run.json")
    assert bench.main(["compare", str(run)]) == 0
    assert "speedup (peer/ours)" in capsys.readouterr().out
    assert bench.main(["compare", str(run), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["rows"][0]["peer"] == "slowpeer"


def test_compare_rejects_a_file_that_is_not_a_benchmark_run(tmp_path, capsys):
    bogus = tmp_path / "x.json"
    bogus.write_text('{"hello": 1}')
    assert bench.main(["compare", str(bogus)]) == 2
    assert "not a pytest-benchmark JSON file" in capsys.readouterr().err
    assert bench.main(["compare", str(tmp_path / "missing.json")]) == 2


def test_autosave_then_compare_fail_catches_a_regression(pytester, monkeypatch):
    """The workflow benchmarks/README.md documents: autosave a baseline, then compare and fail on +15%."""
    pytester.makepyfile(bench_sleep=BENCH_FILE)
    storage = f"--benchmark-storage=file://{pytester.path / 'store'}"
    first = pytester.runpytest_subprocess("bench_sleep.py", "--benchmark-autosave", storage)
    first.assert_outcomes(passed=2)
    monkeypatch.setenv("OURS_DELAY", "0.002")
    same = pytester.runpytest_subprocess(
        "bench_sleep.py", "--benchmark-compare", "--benchmark-compare-fail=median:300%", storage
    )
    assert same.ret == 0
    monkeypatch.setenv("OURS_DELAY", "0.02")  # ten times slower: a regression
    slower = pytester.runpytest_subprocess(
        "bench_sleep.py", "--benchmark-compare", "--benchmark-compare-fail=median:15%", storage
    )
    assert slower.ret != 0
    assert "Performance has regressed" in slower.stdout.str() + slower.stderr.str()


def test_compact_table_and_subject_filter(pytester, capsys):
    run = _run_json(pytester, "run.json")
    assert bench.main(["compare", str(run), "--compact"]) == 0
    out = capsys.readouterr().out
    assert "| sleep | ours |" in out and "slowpeer " in out and out.count("| sleep |") == 1
    assert bench.main(["compare", str(run), "--ours", "ours-nothing"]) == 1
    assert "no group with both" in capsys.readouterr().err
