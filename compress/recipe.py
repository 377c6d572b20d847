"""What to do to a model before export: compression stages, run in order.

    parse_recipe("slimsam-77+birkhoff") == Recipe((SlimSAM(SlimSettings(ratio=0.77)), Birkhoff()))
    parse_recipe("slimsam-77-heads") == Recipe((SlimSAM(SlimSettings(ratio=0.77, attention="heads")),))

`--compress` names a recipe; it is parsed here once, and `compress.stages.apply` runs it
for the build, the benchmarks and the tests alike. A stage holds everything its method
needs (Birkhoff: the codec variant; SlimSAM: the schedule and the images to distil on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .birkhoff.model import VARIANTS
from .slimsam.settings import HEAD_DIMS, HEADS, SlimSettings

SLIMSAM_RATIOS = {"slimsam-50": 0.5, "slimsam-77": 0.77}  # the ratios SlimSAM published
HEADS_SUFFIX = "-heads"  # step 2 keeps fewer, whole heads at the same q/k/v width (compress/slimsam/prune.py)
# SlimSAM stage name -> (ratio, step-2 attention pruning): the paper's head dims, or whole heads.
SLIMSAM_STAGES = {**{name: (ratio, HEAD_DIMS) for name, ratio in SLIMSAM_RATIOS.items()},
                  **{name + HEADS_SUFFIX: (ratio, HEADS) for name, ratio in SLIMSAM_RATIOS.items()}}
# Pruning needs dense weights, so a stacked recipe prunes and distils first, then hyper-compresses.
COMPRESSIONS = ("birkhoff", *SLIMSAM_STAGES, *(f"{name}+birkhoff" for name in SLIMSAM_STAGES))
MIN_SLIMSAM_IMAGES = 3  # at least one held out for validation and two to train on


@dataclass(frozen=True)
class Birkhoff:
    variant: str = "reference"  # "scaled": the same lattice in units of each row's scale (docs/birkhoff.md)
    checkpoint_name = "model.birkhoff.safetensors"  # in the bundle: parity's reference is this model

    @property
    def name(self) -> str:
        return "birkhoff"


@dataclass
class SlimSAM:
    settings: SlimSettings = field(default_factory=SlimSettings)  # the ratio and the distillation schedule
    images: list | None = field(default=None, repr=False, compare=False)  # uint8 RGB arrays to distil on
    checkpoint_name = "model.slimsam.safetensors"

    @property
    def ratio(self) -> float:
        return self.settings.ratio

    @property
    def name(self) -> str:
        return next(name for name, stage in SLIMSAM_STAGES.items()
                    if stage == (self.ratio, self.settings.attention))


@dataclass(frozen=True)
class Recipe:
    stages: tuple  # of Birkhoff and SlimSAM, in the order they run

    @property
    def name(self) -> str:
        """The --compress name: 'birkhoff', 'slimsam-77', 'slimsam-77+birkhoff', ..."""
        return "+".join(stage.name for stage in self.stages)

    @property
    def needs_images(self) -> bool:
        return any(isinstance(stage, SlimSAM) for stage in self.stages)

    def with_images(self, images, settings: SlimSettings | None = None) -> "Recipe":
        """The recipe with `images` (and `settings`' schedule, its ratio and attention pruning kept)
        for every SlimSAM stage."""
        return Recipe(tuple(_slimsam(settings or stage.settings, (stage.ratio, stage.settings.attention), images)
                            if isinstance(stage, SlimSAM) else stage for stage in self.stages))


def _slimsam(schedule: SlimSettings, stage: tuple[float, str], images) -> SlimSAM:
    """A SlimSAM stage at `stage` = (ratio, attention) with `schedule`'s settings and a log of its own."""
    ratio, attention = stage
    return SlimSAM(dataclasses.replace(schedule, ratio=ratio, attention=attention, log={}), images)


def parse_recipe(text: str, variant: str = "reference", images=None,
                 slimsam_settings: SlimSettings | None = None) -> Recipe:
    """The Recipe a --compress name stands for; `variant`, `images` and `slimsam_settings`
    (its ratio is the name's) fill in the stages that use them."""
    if text not in COMPRESSIONS:
        raise ValueError(f"unknown compression {text!r}; choose one of {COMPRESSIONS}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown Birkhoff variant {variant!r}; choose one of {VARIANTS}")
    base = slimsam_settings or SlimSettings()
    stages = tuple(Birkhoff(variant) if name == "birkhoff" else _slimsam(base, SLIMSAM_STAGES[name], images)
                   for name in text.split("+"))
    return Recipe(stages)
