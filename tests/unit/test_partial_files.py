"""Temporary files beside a cache file being made: hidden, beside it, and gone afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosyagent.engines.partial_files import partial_files


def test_the_files_sit_hidden_beside_the_target_and_the_kept_one_becomes_it(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model.gguf"  # the folder does not exist yet
    with partial_files(target, ".types", ".partial") as (types_file, partial):
        assert types_file.parent == partial.parent == target.parent
        assert types_file.name.startswith(".model.gguf.") and types_file.name.endswith(".types")
        assert partial.name.startswith(".model.gguf.") and partial.name.endswith(".partial")
        partial.write_bytes(b"whole")
        os.replace(partial, target)
    assert target.read_bytes() == b"whole"
    assert sorted(path.name for path in target.parent.iterdir()) == ["model.gguf"]


def test_a_failure_midway_leaves_neither_the_target_nor_any_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), partial_files(target, ".partial", ".partial") as paths:
        assert len(set(paths)) == 2 and all(path.exists() for path in paths)
        paths[0].write_bytes(b"half")
        raise RuntimeError("the conversion failed")
    assert list(tmp_path.iterdir()) == []
