import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def _run(*args):
    return subprocess.run([sys.executable, "-m", "runtime.predict", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True)


def test_overlay_is_written(tiny_bundle, tmp_path, photos):
    image = tmp_path / "chelsea.jpg"
    Image.fromarray(photos["chelsea"]).save(image)
    out = tmp_path / "overlay.png"
    result = _run(tiny_bundle, image, "--point", "200,150", "--point", "20,20,0", "--box", "100,50,400,280",
                  "--out", out)
    assert result.returncode == 0, result.stderr
    picture = np.asarray(Image.open(out))
    assert picture.shape == photos["chelsea"].shape
    assert not np.array_equal(picture, photos["chelsea"])  # something was drawn


def test_bad_point_gives_a_clear_error(tiny_bundle, tmp_path, photos):
    image = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"]).save(image)
    result = _run(tiny_bundle, image, "--point", "9000,10", "--out", tmp_path / "o.png")
    assert result.returncode == 2
    assert "outside the 600x400 image" in result.stderr
    assert not (tmp_path / "o.png").exists()
