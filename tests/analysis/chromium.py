"""Headless Chromium for the report's browser tests: find (or install) it, and drive it over the DevTools
protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in NUL on the browser's fds 3 and
4), so no port, no websocket client and no package beyond the standard library is needed.
"""

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu")
WINDOW = (1366, 900)  # a laptop screen
NAMES = ("chromium", "chromium-browser")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, NAMES) if path), None)


def install_chromium() -> str | None:
    """Debian's `chromium`, installed with apt-get when missing and we are root; None when that cannot be."""
    found = find_chromium()
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return find_chromium()


def screenshot(binary: str, url: str, out: Path, profile: Path) -> subprocess.CompletedProcess:
    """Chromium's own one-shot screenshot of `url` at the laptop window size."""
    command = [binary, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}"]
    command += [f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars", url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


class DevTools:
    """One headless browser with one page, driven over the DevTools pipe. Use as a context manager."""

    def __init__(self, binary: str, profile: Path):
        # sh hands our pipes to the browser as fds 3 (it reads) and 4 (it writes).
        script = 'exec "$@" 3<&0 4>&1 0</dev/null 1>/dev/null'
        args = [*FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        self.log = (profile.parent / f"{profile.name}-stderr.log").open("w")
        self.process = subprocess.Popen(
            ["sh", "-c", script, "sh", binary, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self.events: list[dict] = []
        self._replies: dict[int, dict] = {}
        self._arrived: queue.Queue = queue.Queue()
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = ""

    def _read(self) -> None:
        buffer = b""
        while chunk := self.process.stdout.read1(65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                self._arrived.put(json.loads(raw))
        self._arrived.put(None)  # the browser closed the pipe

    def _pump(self, deadline: float) -> None:
        message = self._arrived.get(timeout=max(0.01, deadline - time.monotonic()))
        if message is None:
            raise RuntimeError("the browser closed its DevTools pipe")
        if "id" in message:
            self._replies[message["id"]] = message
        else:
            self.events.append(message)

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        """Send a command (to the page once attached) and wait for its result; errors raise."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.process.stdin.write(json.dumps(message).encode() + b"\0")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while self._next_id not in self._replies:
            self._pump(deadline)
        reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            self._pump(deadline)
        return next(e for e in self.events if e["method"] == method)

    def open(self, url: str) -> None:
        """A page at the laptop window size with console, exceptions and log recorded, loaded with `url`."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=WINDOW[0],
            height=WINDOW[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Uncaught exceptions, console.error/assert calls and error-level log entries so far."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(
                    f"exception: {details.get('exception', {}).get('description') or details['text']}"
                )
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(f"console.{params['type']}: {[a.get('value') for a in params['args']]}")
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']}")
        return found

    def screenshot(self, out: Path, **clip) -> Path:
        """The viewport (or `clip`: x, y, width, height in page pixels) as a PNG file."""
        params = {"format": "png"}
        if clip:
            params |= {"clip": {**clip, "scale": 1}, "captureBeyondViewport": True}
        out.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", **params)["data"]))
        return out

    def __enter__(self) -> "DevTools":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.session = ""
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, queue.Empty):
            pass  # already gone: the wait below reaps it
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            self.log.close()
