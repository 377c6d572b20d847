"""Start the tritonserver that ships in the nvidia-pytriton wheel on a model repository, and stop it.

    python -m runtime.serving.server bundles/demo-triton --http-port 8000 --grpc-port 8001

The wheel carries a stock Triton server with its Python backend (no onnxruntime or tensorrt
backend), so a repository written by `python -m export.build --target triton` (Python-backend
models) is served by it as by any Triton. Two things the wheel leaves to its own launcher are done
here: a backends folder with the Python-backend stub of this Python's version beside the backend,
and an environment whose library path holds the wheel's shared libraries and whose PATH starts with
this Python's bin (the stub runs the models in this Python, so they import samedge).
Where a full Triton is installed (NGC containers, Jetson), pass its binary with --tritonserver.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_SECONDS = 120.0  # loading a model repository on 2 cores takes seconds; vit_h's encoder a minute
STOP_SECONDS = 30.0  # in-flight requests finish before the server exits; then it is killed


class ServerError(RuntimeError):
    """The server did not start, or died; the message holds the end of its log."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wheel_server() -> tuple[Path, Path, Path]:
    """(tritonserver binary, the wheel's tritonserver folder, its shared libraries) of nvidia-pytriton."""
    # Located, never imported: installed without its dependencies (its numpy pin is not ours), it does not import.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("no tritonserver: install the wheel that carries one with pip install --no-deps "
                          "nvidia-pytriton==0.7.0 (scripts/setup.sh does), or pass --tritonserver PATH of a full "
                          "Triton")
    root = Path(spec.submodule_search_locations[0]) / "tritonserver"
    return root / "bin" / "tritonserver", root, root.parent.parent / "nvidia_pytriton.libs"


class TritonServer:
    """A tritonserver process on `repository`; `with TritonServer(repo) as server:` starts it, waits until it
    is ready, and stops it at the end. Ports default to free ones; `server.http_url`, `server.grpc_url`."""

    def __init__(self, repository, http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, tritonserver: str | None = None, log_path=None,
                 extra_args: tuple[str, ...] = (), exit_timeout: float = STOP_SECONDS):
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise ServerError(f"{repository} is not a model repository folder; write one with "
                              "python -m export.build --target triton")
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.tritonserver = tritonserver
        self.log_path = Path(log_path) if log_path else None
        self.extra_args = tuple(extra_args)
        self.exit_timeout = exit_timeout
        self.process: subprocess.Popen | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self, backends: Path) -> list[str]:
        binary = self.tritonserver or str(wheel_server()[0])
        return [binary, "--model-repository", str(self.repository), "--backend-directory", str(backends),
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--metrics-port", str(self.metrics_port), "--allow-metrics", "false",
                "--exit-timeout-secs", str(int(self.exit_timeout)), *self.extra_args]

    def start(self, wait: float = STARTUP_SECONDS) -> "TritonServer":
        self._scratch = tempfile.TemporaryDirectory(prefix="samedge-triton-")
        scratch = Path(self._scratch.name)
        env = dict(os.environ)
        if self.tritonserver:
            backends = Path(self.tritonserver).resolve().parent.parent / "backends"
        else:
            binary, root, libraries = wheel_server()
            backends = _python_backend_folder(root, scratch)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libraries), env.get("LD_LIBRARY_PATH")]))
        # The Python backend's stub runs each model in the first python3 on PATH: this one.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        log_path = self.log_path or scratch / "tritonserver.log"
        self._log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(backends), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        try:
            self._wait_ready(wait)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with status {self.process.returncode} while starting:\n"
                                  f"{self.failed_models()}{self.log_tail(12)}")
            if self.ready():
                return
            time.sleep(0.2)
        raise ServerError(f"tritonserver was not ready after {wait:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def failed_models(self) -> str:
        """The log's lines of models that did not load, each with Triton's reason (the model's own error)."""
        try:
            lines = Path(self._log_path).read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            return ""
        failed = [" ".join(line.split()) for line in lines if "UNAVAILABLE" in line]
        return "models that did not load:\n" + "\n".join(failed) + "\n" if failed else ""

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self._log_path).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no log)"

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM (Triton finishes the requests it accepted, then exits), SIGKILL after `timeout` (default: a
        little past the server's own exit timeout)."""
        timeout = self.exit_timeout + 5 if timeout is None else timeout
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and its Python-backend stubs
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def kill(self) -> None:
        """End the server at once, as a crash would (its accepted requests are lost: clients see errors)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self if self.process is not None else self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _python_backend_folder(root: Path, scratch: Path) -> Path:
    """backends/python with the wheel's backend library and the stub built for this Python's version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the tritonserver wheel has no Python-backend stub for Python {version}; run samedge "
                          "under a Python it has (3.8-3.13)")
    backends = scratch / "backends"
    python = backends / "python"
    python.mkdir(parents=True)
    for source in (root / "backends" / "python").iterdir():
        if source.is_file():
            (python / source.name).symlink_to(source)
    shutil.copy2(stub, python / stub.name)
    return backends


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.serving.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", help="a model repository (python -m export.build --target triton)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--tritonserver", help="a full Triton's binary instead of the wheel's")
    parser.add_argument("--model-control-mode", choices=("none", "poll", "explicit"), default="none",
                        help="none: every model at start; poll: the repository re-read every --poll-seconds (new "
                             "versions written by export.triton are served, as it renames them into place); "
                             "explicit: only --load-model ones, then clients load and unload")
    parser.add_argument("--poll-seconds", type=int, default=15)
    parser.add_argument("--load-model", action="append", default=[], metavar="NAME",
                        help="with explicit control: a model to load at start (repeat for more)")
    args = parser.parse_args(argv)
    if args.load_model and args.model_control_mode != "explicit":
        parser.error("--load-model needs --model-control-mode explicit")
    control = ["--model-control-mode", args.model_control_mode]
    if args.model_control_mode == "poll":
        control += ["--repository-poll-secs", str(args.poll_seconds)]
    control += [argument for name in args.load_model for argument in ("--load-model", name)]
    server = TritonServer(args.repository, args.http_port, args.grpc_port, args.metrics_port, args.tritonserver,
                          extra_args=tuple(control))
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop, even while starting: the server stops too
    try:
        server.start()
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0  # start() stopped the server before passing the interrupt on
    print(f"serving {server.repository}: HTTP {server.http_url}, gRPC {server.grpc_url} (Ctrl-C stops)", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
        print(f"error: tritonserver exited by itself with status {server.process.returncode}:\n{server.log_tail()}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()

if __name__ == "__main__":
    sys.exit(main())
