"""docs/scaling.md's placement example, extracted from the page and run as written: it needs no
Redis (it computes where each partition's hash tag falls); its output is compared with the
page's."""

from __future__ import annotations

from pathlib import Path

from tests.support.docs import doc_files, output_after, run_to_end, write_files

PAGE = "scaling.md"


def test_the_placement_example_prints_what_the_page_shows(tmp_path: Path) -> None:
    write_files(tmp_path, doc_files(PAGE), "placement.py")
    done = run_to_end(tmp_path / "placement.py", {}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == output_after(PAGE, "placement.py").strip()
