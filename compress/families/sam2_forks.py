"""Forks of facebookresearch/sam2 (EfficientTAM, EdgeTAM) beside the real sam2 in one process.

efficient-track-anything 1.0 and edgetam-dimos 1.0.1 each ship a top-level package named `sam2`: installed
with pip they would replace sam2 1.1.0, which the SAM 2 family (compress/families/sam2.py) is built and
checked with. So each is installed apart (`pip install --target .venv/upstream/<distribution>`) and this
module lends it the name `sam2` only while a `with fork.active():` block runs.

Why swapping sys.modules, not a renamed copy or a subprocess:
- The forks import themselves by absolute name (`from sam2.modeling... import`), Hydra's `_target_`s name
  `sam2.modeling...` classes, and some functions import lazily at call time (the transforms' hole filling,
  `from sam2 import _C`). A renamed copy would mean rewriting their code (and copying it into ours); a
  subprocess would mean pickling models across processes, and parity compares in-process modules.
- While a block runs, the `sam2*` entries of sys.modules are the fork's (imported once, then kept aside
  and put back each time, so a model built in one block has the same classes in the next); on leaving,
  the fork's entries are set aside again and the real ones restored, whatever the block raised.
- Hydra: importing a fork's `sam2/__init__` initialises hydra's GlobalHydra (EfficientTAM's with
  `initialize("configs")`, which refuses when the real sam2 already initialised it). GlobalHydra's state is
  one attribute (`.hydra`); each side's is kept and swapped with the modules. compose() would read the
  config module by name at call time, so this module never composes: configs are read as data
  (OmegaConf.load of a fork's own yaml, or our dict) and built with hydra.utils.instantiate inside a block.
- Everything that runs fork code (building, the reference predictors, tracing pieces) enters a block;
  `call_in(fork, obj)` wraps an upstream predictor so each of its calls, and each step of a generator it
  returns (propagate_in_video), runs inside one. Blocks nest (the lock is re-entrant).
Not thread-safe across forks beyond the lock: a thread using the real sam2 while another holds a fork's
block would see the fork's modules; samedge builds and checks one model at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "sam2"
UPSTREAM = Path(sys.prefix) / "upstream"  # scripts/ installs each fork here with pip --target
_LOCK = threading.RLock()


def _is_sam2(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _hydra():
    from hydra.core.global_hydra import GlobalHydra

    return GlobalHydra.instance()


@dataclass
class Fork:
    """One fork's `sam2` package, installed with pip --target under `folder`."""

    distribution: str  # e.g. "efficient-track-anything"
    requirement: str  # how to install it, for the error message
    folder: Path | None = None
    _modules: dict = field(default_factory=dict, repr=False)  # its sys.modules entries while set aside
    _hydra_state: object = field(default=None, repr=False)
    _depth: int = field(default=0, repr=False)

    @property
    def root(self) -> Path:
        return self.folder or UPSTREAM / self.distribution

    def check_installed(self) -> None:
        if not (self.root / PACKAGE / "__init__.py").is_file():
            raise ImportError(f"{self.distribution}'s sam2 fork is not installed at {self.root}: install it apart from "
                              f"sam2 1.1.0 with pip install --no-deps --target {self.root} {self.requirement} "
                              "(scripts/setup does)")

    @contextlib.contextmanager
    def active(self):
        """While open, `import sam2` (and Hydra's `_target_`s) give this fork; the real sam2 after."""
        with _LOCK:
            if self._depth:
                self._depth += 1
                try:
                    yield self.module()
                finally:
                    self._depth -= 1
                return
            self.check_installed()
            with contextlib.suppress(ImportError):
                importlib.import_module(PACKAGE)  # the real one loaded first, so it is what comes back
            real = {name: sys.modules.pop(name) for name in [n for n in sys.modules if _is_sam2(n)]}
            hydra = _hydra()
            real_hydra, hydra.hydra = hydra.hydra, self._hydra_state
            sys.modules.update(self._modules)
            self._depth = 1
            try:
                if PACKAGE not in sys.modules:
                    self._first_import()
                yield self.module()
            finally:
                self._depth = 0
                self._modules = {name: sys.modules.pop(name) for name in [n for n in sys.modules if _is_sam2(n)]}
                self._hydra_state, hydra.hydra = hydra.hydra, real_hydra
                sys.modules.update(real)

    def _first_import(self) -> None:
        # Only the top-level import searches sys.path; submodules follow the package's own __path__.
        sys.path.insert(0, str(self.root))
        try:
            importlib.import_module(PACKAGE)
        finally:
            sys.path.remove(str(self.root))
        loaded = Path(sys.modules[PACKAGE].__file__).resolve()
        if self.root.resolve() not in loaded.parents:
            raise ImportError(f"importing {self.distribution}'s sam2 gave {loaded} instead")

    def module(self, name: str = PACKAGE):
        """The fork's module `name` (inside an active block)."""
        return importlib.import_module(name)

    def instantiate(self, config: dict):
        """hydra.utils.instantiate of `config` (plain data: {"_target_": "sam2.…", …}) with this fork's classes."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        with self.active():
            return instantiate(OmegaConf.create(config), _recursive_=True)

    def config_file(self, relative: str) -> dict:
        """A yaml the fork ships (inside its sam2 package) as a plain dict; read as data, never composed."""
        from omegaconf import OmegaConf

        path = self.root / PACKAGE / relative
        if not path.is_file():
            raise FileNotFoundError(f"{self.distribution} has no {relative} at {path}; reinstall it")
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


class InFork:
    """An upstream object whose every method call (and every step of a generator it returns) runs
    inside `fork.active()`; other attributes read through."""

    def __init__(self, fork: Fork, target):
        object.__setattr__(self, "_fork", fork)
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name):
        value = getattr(self._target, name)
        if not callable(value):
            return value
        fork = self._fork

        def call(*args, **kwargs):
            with fork.active():
                result = value(*args, **kwargs)
            if hasattr(result, "__next__") and hasattr(result, "send"):
                return _steps_in(fork, result)
            return result

        return call

    def __setattr__(self, name, value):
        setattr(self._target, name, value)


def _steps_in(fork: Fork, generator):
    while True:
        with fork.active():
            try:
                item = next(generator)
            except StopIteration:
                return
        yield item


def call_in(fork: Fork, target) -> InFork:
    return InFork(fork, target)


def nested_set(config: dict, dotted: str, value) -> None:
    """config["a"]["b"]["c"] = value for "a.b.c" (our overrides, as Hydra's ++a.b.c=value)."""
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


EFFICIENT_TAM = Fork("efficient-track-anything", "efficient-track-anything==1.0")
EDGETAM = Fork("edgetam-dimos", "edgetam-dimos==1.0.1")
