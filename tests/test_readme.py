"""README.md's tour runs as written: every ```python block, in order, in one namespace."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["bash .ci/dev demo", "bash .ci/dev test"]
    assert text.index("```bash") < text.index("\n## "), "the commands come before any section"


def test_readme_tour_runs(redis_url, monkeypatch, tmp_path, capsys):
    from tnfr_fastcache import reset_global_cache

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert len(blocks) >= 5
    namespace = {"__name__": "readme"}
    reset_global_cache()
    try:
        for number, block in enumerate(blocks, 1):
            try:
                exec(compile(block, f"README.md python block {number}", "exec"), namespace)
            except Exception as exc:  # name the block that broke
                pytest.fail(f"README python block {number} raised {exc!r}:\n{block}")
    finally:
        reset_global_cache()
    out = capsys.readouterr().out
    assert "CacheInfo(hits=1, misses=1, maxsize=128, currsize=1)" in out
    assert "0.5" in out and "Cache Performance Report" in out
