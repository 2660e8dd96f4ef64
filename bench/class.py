"""bench/class: a class on one Gantry. N learners (default 30) each do the whole lab at once
through the web's own endpoints (HTTP with CSRF, the terminal websocket), while an
instructor watches the Class page.

    /opt/gantry/venv/bin/python -m bench.class [--learners 30] [--watch 2.0]

The stack is started as `./gantry run` starts it (its demo registry serving gantry/on-off),
on private directories and a free port. Each learner, as the seed lab: logs in, starts the
lab, pulls the image, creates `on-off` with `-v /mnt:/mnt`, opens the container table,
mounts it, touches `test` in the file explorer, generates config.json, starts it (it must
exit 0: their /mnt is empty), looks at Host files (no /mnt/on there yet), touches /mnt/on,
starts it again (top runs), runs `ls /` in an exec terminal over the websocket (it must show
`test`), kills it, removes it, and opens the Lab page (9/9, "All done").

Printed: labs completed; interference found (another learner's /mnt/on, container or file
seen: must be 0); p50/p95/max of each request kind, pages and the Class page included; the
engine's and the web's resident memory (their process trees, peak). Targets (issue 13):
30/30 labs, 0 interference, p95 <= 300 ms for pages and <= 1 s for a start.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.stack.stackrun import Stack, free_port  # noqa: E402
from tests.stack.test_terminal_ws import Pane, open_ws  # noqa: E402

HX = {"HX-Request": "true"}
PASSWORD = "class-pass-1234"  # noqa: S105 (the bench's own users, on a private stack)
STEP_TIMEOUT = 120.0
POLL = 0.5  # how often a waiting page looks again (a browser's page waits for an event)


class Timings:
    """Seconds per request kind, from every thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_kind: dict[str, list[float]] = defaultdict(list)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.by_kind[kind].append(seconds)


class Learner:
    """One learner's browser, minus the drawing: a session with its CSRF token."""

    def __init__(self, stack: Stack, name: str, image: str, timings: Timings) -> None:
        self.stack, self.name, self.image, self.timings = stack, name, image, timings
        self.session: requests.Session | None = None
        self.problems: list[str] = []  # interference seen
        self.container = ""
        self.think = 0.0  # mean seconds a person takes between two clicks
        self.random = random.Random(name)

    def call(self, kind: str, method: str, path: str, **kw: Any) -> requests.Response:
        assert self.session is not None
        if self.think and not kind.startswith("poll."):  # a person reads, then clicks
            time.sleep(self.random.uniform(0.5, 1.5) * self.think)
        started = time.monotonic()
        r = self.session.request(method, self.stack.url + path, timeout=60, **kw)
        self.timings.add(kind, time.monotonic() - started)
        if r.status_code >= 400:
            raise RuntimeError(f"{self.name}: {kind}: HTTP {r.status_code}: {r.text[:300]}")
        return r

    def log_in(self) -> None:
        started = time.monotonic()
        self.session = self.stack.login(self.name, PASSWORD)
        self.timings.add("login", time.monotonic() - started)

    def wait(self, what: str, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not probe():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: timed out waiting for {what}")
            time.sleep(POLL)

    def see_no_other(self, kind: str, text: str) -> None:
        """Interference: any learner's container name but one's own on a page."""
        for owner in set(re.findall(r"\b([a-z0-9_-]+)\.on-off\b", text)) - {self.name}:
            self.problems.append(f"{kind} shows {owner}.on-off")

    def pull(self) -> None:
        card = self.call("image.pull", "POST", "/images/pull", data={"ref": self.image}, headers=HX)
        job = re.search(r'data-job="([^"]+)"', card.text)
        assert job, card.text[:300]

        def done() -> bool:
            jobs = self.call("poll.pulls", "GET", "/images/pulls").text
            state = re.search(rf'data-job="{job.group(1)}" data-state="(\w+)"', jobs)
            if state and state.group(1) == "failed":
                raise RuntimeError(f"{self.name}: the pull failed")
            return bool(state and state.group(1) == "done")

        self.wait("the pull", done)

    def create(self) -> None:
        form = {"image": self.image, "name": "on-off", "volumes": "/mnt:/mnt"}
        r = self.call("container.create", "POST", "/containers/new", data=form, headers=HX)
        target = r.headers.get("HX-Redirect", "")
        assert target.startswith("/containers/"), f"{self.name}: create: {r.text[:300]}"
        self.container = target.strip("/").split("/")[-1]
        self.see_no_other(
            "the container table", self.call("page.containers", "GET", "/containers/table").text
        )

    def state(self) -> tuple[str, str]:
        text = self.call("poll.run-state", "GET", f"/containers/{self.container}/run/state").text
        state = re.search(r'data-testid="run-state">([^<]*)<', text)
        code = re.search(r'data-testid="run-exit-code">([^<]*)<', text)
        return (state.group(1) if state else "?", code.group(1).strip() if code else "?")

    def start(self, until: str) -> str:
        self.call("container.start", "POST", f"/containers/{self.container}/run/start", headers=HX)
        self.wait(f"state {until}", lambda: self.state()[0] == until)
        return self.state()[1]

    def prepare(self) -> None:
        base = f"/containers/{self.container}"
        self.call("container.mount", "POST", f"{base}/mount", headers=HX)
        touch = {"dir": "/", "name": "test"}
        self.call("fs.touch", "POST", f"{base}/files/touch", data=touch, headers=HX)
        self.call("spec.generate", "POST", f"{base}/spec/generate", headers=HX)

    def first_start(self) -> None:
        code = self.start("exited")
        if code != "0":
            self.problems.append(f"the first start exited {code}, not 0 (someone's /mnt/on?)")
        files = self.call("page.host-files", "GET", "/lab/host-files").text
        if "/mnt/on</td>" in files:
            self.problems.append("Host files shows /mnt/on before this learner made it")
        self.call("sandbox.touch", "POST", "/lab/host-files/touch", data={"path": "/mnt/on"})

    def exec_ls(self) -> None:
        base = f"/containers/{self.container}"
        r = self.call(
            "exec.create", "POST", f"{base}/terminal/exec", data={"command": ""}, headers=HX
        )
        exec_id = json.loads(r.headers["HX-Trigger"])["gantry:exec-created"]["exec"]
        started = time.monotonic()
        pane = Pane(open_ws(self.stack, self.session, f"/ws{base}/exec/{exec_id}/"))
        try:
            pane.wait_control("attached", timeout=STEP_TIMEOUT)
            pane.type("ls /\n")
            pane.wait_text("test", timeout=STEP_TIMEOUT)
            self.timings.add("ws.exec-ls", time.monotonic() - started)
            pane.type("exit\n")
            pane.wait_control("exit", timeout=STEP_TIMEOUT)
        finally:
            pane.ws.close()

    def take_apart(self) -> None:
        base = f"/containers/{self.container}"
        self.call("container.kill", "POST", f"{base}/run/kill", data={"signal": "KILL"}, headers=HX)
        self.wait("exited after kill", lambda: self.state()[0] == "exited")
        self.call("container.remove", "POST", f"{base}/remove", headers=HX)

    def lab(self, arrive: float = 0.0) -> bool:
        """The whole lab, after ``arrive`` seconds; True if the Lab page ends with every check
        done."""
        time.sleep(arrive)
        self.log_in()
        self.call("lab.start", "POST", "/lab/start", data={"image": self.image})
        self.pull()
        self.create()
        self.prepare()
        self.first_start()
        self.start("running")
        self.exec_ls()
        self.take_apart()
        self.see_no_other("the Lab page", self.call("page.lab", "GET", "/lab/").text)
        checks = self.call("page.lab-checks", "GET", "/lab/checks").text
        return checks.count('data-done="true"') == 9 and "All done" in checks


class Watcher(threading.Thread):
    """The instructor on the Class page (its table, as it reloads) and the peak memory of
    the engine's and the web's process trees, until stopped."""

    def __init__(self, stack: Stack, timings: Timings, every: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.timings, self.every = stack, timings, every
        self.stop = threading.Event()
        self.peak: dict[str, int] = {"engine": 0, "web": 0}
        self.rows = 0
        self.error = ""

    def run(self) -> None:
        teacher = Learner(self.stack, "teacher", "", self.timings)
        teacher.log_in()
        while True:
            try:
                table = teacher.call("page.class", "GET", "/class/table").text
                self.rows = table.count("data-learner=")
                teacher.call("page.containers(all)", "GET", "/containers/table")
            except RuntimeError as err:
                self.error = str(err)
            for name in self.peak:
                self.peak[name] = max(self.peak[name], tree_rss(self.stack.pid(name)))
            if self.stop.wait(self.every):
                return


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (from /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].append(int(entry))
    total, todo = 0, [pid]
    while todo:
        one = todo.pop()
        todo.extend(children.get(one, []))
        try:
            status = Path(f"/proc/{one}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(found.group(1)) * 1024 if found else 0
    return total


def start_stack(learners: int) -> tuple[Stack, str]:
    """The stack as `./gantry run` starts it, with its demo registry, N learners and a
    teacher; answers it and the lab's image reference."""
    port = free_port()
    stack = Stack(extra_env={"GANTRY_DEMO": "1", "GANTRY_REGISTRY_PORT": str(port)})
    stack.env["GANTRY_REGISTRY_DIR"] = str(stack.tmp / "registry")
    stack.start(timeout=600)
    names = [f"learner{i:02d}" for i in range(learners)]
    stack.manage(
        "shell", "-v", "0", "-c",
        "from webui import users\n"
        f"for name in {names!r}: users.add(name, users.LEARNER, {PASSWORD!r})\n"
        f"users.add('teacher', users.INSTRUCTOR, {PASSWORD!r})",
    )  # fmt: skip
    return stack, f"127.0.0.1:{port}/gantry/on-off:latest"


def run_class(stack: Stack, image: str, args: Any) -> dict[str, Any]:
    timings = Timings()
    watcher = Watcher(stack, timings, args.watch)
    watcher.start()
    learners = [Learner(stack, f"learner{i:02d}", image, timings) for i in range(args.learners)]
    for one in learners:
        one.think = args.think
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(learners)) as pool:
        arrivals = [one.random.uniform(0, args.arrive) for one in learners]
        results = list(pool.map(_one_lab, learners, arrivals))
    seconds = time.monotonic() - started
    watcher.stop.set()
    watcher.join(30)
    teacher = Learner(stack, "teacher", "", timings)
    teacher.log_in()
    for _ in range(5):  # the same pages once the class is done: what the load added
        teacher.call("idle.class", "GET", "/class/table")
        teacher.call("idle.containers(all)", "GET", "/containers/table")
    return {
        "completed": sum(1 for ok, _ in results if ok),
        "failures": [why for ok, why in results if not ok],
        "interference": [p for one in learners for p in (f"{one.name}: {x}" for x in one.problems)],
        "seconds": seconds,
        "timings": timings.by_kind,
        "peak": watcher.peak,
        "class_rows": watcher.rows,
        "watch_error": watcher.error,
    }


def _one_lab(learner: Learner, arrive: float) -> tuple[bool, str]:
    try:
        return (True, "") if learner.lab(arrive) else (False, f"{learner.name}: not 9/9 at the end")
    except (RuntimeError, AssertionError, OSError, TimeoutError) as err:
        return False, f"{learner.name}: {err}"


PAGES = ("page.", "lab.start")


def report(result: dict[str, Any], count: int) -> None:
    print(f"\nlabs completed: {result['completed']}/{count} in {result['seconds']:.1f} s")
    for why in result["failures"][:10]:
        print(f"  failed: {why}")
    print(f"interference found: {len(result['interference'])}")
    for why in result["interference"][:10]:
        print(f"  {why}")
    print(f"the Class page showed {result['class_rows']} learners {result['watch_error']}")
    print(f"\n{'request':<20} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for kind, values in sorted(result["timings"].items()):
        ms = sorted(v * 1000 for v in values)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        print(f"{kind:<20} {len(ms):>5} {statistics.median(ms):>8.0f} {p95:>8.0f} {ms[-1]:>8.0f}")
    for name, size in result["peak"].items():
        print(f"peak RSS, {name} (process tree): {size / 1048576:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learners", type=int, default=30)
    parser.add_argument("--watch", type=float, default=2.0, help="Class page reload, seconds")
    parser.add_argument(
        "--think",
        type=float,
        default=1.0,
        help="mean seconds between a learner's clicks (0: all at once)",
    )
    parser.add_argument(
        "--arrive", type=float, default=10.0, help="learners log in over these seconds"
    )
    args = parser.parse_args()
    stack, image = start_stack(args.learners)
    try:
        report(run_class(stack, image, args), args.learners)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
