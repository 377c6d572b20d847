"""The bundled demonstration model: present, loadable, and still good at its task."""

from compress import load_checkpoint
from compress.checkpoint_file import read_checkpoint_metadata
from compress.demo.evaluate import evaluate
from tests.conftest import DEMO_CHECKPOINT


def test_bundled_weights_are_small_and_in_our_format():
    assert DEMO_CHECKPOINT.stat().st_size <= 15 * 2**20
    assert read_checkpoint_metadata(DEMO_CHECKPOINT)["format"] == "samedge.checkpoint"
    assert load_checkpoint(DEMO_CHECKPOINT).config.name == "demo"


def test_demo_model_segments_held_out_shapes():
    # 40 of the 200 held-out images; the full figures are in docs/demo-model.md.
    metrics = evaluate(DEMO_CHECKPOINT, count=40, show_progress=False)
    assert metrics["box_miou"] >= 0.75, metrics
    assert metrics["point_miou"] >= 0.6, metrics


def test_bundle_and_checkpoint_score_alike(demo_bundle):
    torch_metrics = evaluate(DEMO_CHECKPOINT, count=10, show_progress=False)
    bundle_metrics = evaluate(demo_bundle, count=10, show_progress=False)
    assert abs(torch_metrics["box_miou"] - bundle_metrics["box_miou"]) < 0.005
    assert abs(torch_metrics["point_miou"] - bundle_metrics["point_miou"]) < 0.005
