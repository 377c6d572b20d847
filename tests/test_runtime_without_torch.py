"""runtime must import and predict on a machine with no torch (Jetsons often have none)."""

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_session_predicts_with_torch_unimportable(tiny_bundle):
    script = textwrap.dedent(f"""
        import sys
        for name in ("torch", "torchvision", "segment_anything", "sam2"):
            sys.modules[name] = None  # any import of them now raises ImportError
        import numpy as np
        from runtime import Session
        session = Session({str(tiny_bundle)!r})
        masks, scores, logits = session.predict(np.zeros((30, 40, 3), np.uint8), box=[2, 3, 20, 25],
                                                multimask_output=False)
        assert masks.shape == (1, 30, 40), masks.shape
        # The TensorRT backend and its host-side mask upscaling need no torch either.
        from runtime.backends import tensorrt_backend
        from runtime.masks import upscale_masks
        assert upscale_masks(np.zeros((1, 4, 16, 16), np.float32), 64, (30, 40)).shape == (1, 4, 30, 40)
        assert not any(m.startswith("torch") for m in sys.modules if sys.modules[m] is not None)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_sam2_bundle_predicts_with_torch_unimportable(sam2_bundle):
    """SAM 2's pre-processing (runtime/geometry.py) and decoding are numpy and ONNX Runtime too."""
    script = textwrap.dedent(f"""
        import sys
        for name in ("torch", "torchvision", "segment_anything", "sam2", "hydra"):
            sys.modules[name] = None
        import numpy as np
        from runtime import Session
        with Session({str(sam2_bundle)!r}) as session:
            masks, scores, logits = session.predict(np.zeros((30, 40, 3), np.uint8), points=[[10, 12]], labels=[1])
            assert masks.shape == (3, 30, 40) and logits.shape == (3, 64, 64), (masks.shape, logits.shape)
            batch = session.predict_batch(boxes=[[2, 3, 20, 25], [5, 5, 30, 28]])
            assert batch.masks.shape == (2, 3, 30, 40), batch.masks.shape
        assert not any(m.startswith(("torch", "sam2")) for m in sys.modules if sys.modules[m] is not None)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
