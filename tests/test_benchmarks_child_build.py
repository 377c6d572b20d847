"""benchmarks.variants.build_variant builds in a child process (its memory goes back when it exits):
the record names the child, the bundle opens, a cache hit starts no child, a failed child raises here."""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import signal

import pytest

from benchmarks import sam2
from benchmarks.plans import plans, tiny_plan
from benchmarks.variants import ORIGINAL, build_variant, cache_dir
from compress import seeded_checkpoint
from runtime.bundle import open_bundle


def test_every_model_source_pickles(tmp_path):
    sources = [plan.source for kind in ("full", "quick", "tiny") for plan in plans(kind, tmp_path)]
    sources.append(sam2._source("sam2.1_hiera_t_256", tmp_path))
    for source in sources:
        copy = pickle.loads(pickle.dumps(source))
        assert copy.key == source.key and copy.slim_tag == source.slim_tag
        if source.slim_tag != "none":  # SAM 2's sources have no SlimSAM settings (they raise)
            assert copy.slim_settings() == source.slim_settings()


@pytest.fixture(scope="module")
def built_original(tmp_path_factory):
    work = tmp_path_factory.mktemp("child-build")
    plan = tiny_plan(work)
    return plan, work, build_variant(ORIGINAL, plan.source, work, {})


def test_the_build_runs_in_a_child_process_and_its_bundle_opens(built_original):
    plan, work, built = built_original
    assert built.built_in_pid not in (0, os.getpid())  # the record the child wrote names the child
    assert built.bundle == cache_dir(work, plan.source, ORIGINAL)
    opened = open_bundle(built.bundle)
    assert opened.manifest["model"]["name"] == "tiny"
    assert built.checkpoint == opened.checkpoint and built.checkpoint.is_file()


def test_a_cache_hit_starts_no_child(built_original):
    plan, work, built = built_original
    manifest = built.bundle / "manifest.json"
    written = manifest.stat().st_mtime_ns
    # A lambda cannot be pickled: had this call started a child, it would raise.
    unpicklable = dataclasses.replace(plan.source, checkpoint=lambda: seeded_checkpoint("tiny", work / "tiny"))
    again = build_variant(ORIGINAL, unpicklable, work, {})
    assert again.built_in_pid == built.built_in_pid and again.built_at == built.built_at
    assert manifest.stat().st_mtime_ns == written


def test_an_unpicklable_source_is_named_before_any_child(tmp_path):
    source = dataclasses.replace(tiny_plan(tmp_path).source, checkpoint=lambda: tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="cannot be sent to the build's child process.*functools.partial"):
        build_variant(ORIGINAL, source, tmp_path, {})


def test_a_failing_build_raises_here_with_the_childs_error(tmp_path):
    source = dataclasses.replace(tiny_plan(tmp_path).source,
                                 checkpoint=functools.partial(seeded_checkpoint, "vit_q", tmp_path / "vit_q"))
    with pytest.raises(RuntimeError) as raised:
        build_variant(ORIGINAL, source, tmp_path, {})
    first, _, rest = str(raised.value).partition("\n")
    # The child's exception on the first line (one-line reports show it), its traceback after.
    assert first.startswith("building original of tiny failed in its child process (exit code 1): "
                            "ValueError: unknown model type 'vit_q'")
    assert "in seeded_checkpoint" in rest and "in _build_and_record" in rest
    assert not cache_dir(tmp_path, source, ORIGINAL).with_suffix(".json").exists()  # no record of a failure


def test_a_killed_child_raises_here_with_its_signal(tmp_path):
    # What the kernel's out-of-memory killer does to a build: SIGKILL, no exception, no traceback.
    source = dataclasses.replace(tiny_plan(tmp_path).source,
                                 checkpoint=functools.partial(signal.raise_signal, signal.SIGKILL))
    with pytest.raises(RuntimeError, match=r"\(exit code -9: killed by SIGKILL, as the kernel's out-of-memory "
                                           r"killer does\); it reported no exception"):
        build_variant(ORIGINAL, source, tmp_path, {})
