"""The whole lab, clicked through in Chromium against the stack started the way `./gantry run`
starts it, with the demo registry and the gantry/on-off image Gantry builds itself:

log in, start the lab, pull the image and watch the progress bars finish, create the container
with -v, mount, create `test` in the explorer, generate config.json and edit it (a broken edit
shows its error; fix it), start (Exited (0)), create /mnt/on, start again (Up), type `ls` in an
exec terminal and see `test`, kill, remove — every lab check turning green by itself on the way,
a screenshot of each step in tests/artifacts/. A second user sees none of it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import needs_chromium
from tests.engine.runtools import can_run_containers
from tests.skips import requires
from tests.stack.stackrun import Stack, free_port

DEMO = Path(os.environ.get("GANTRY_DEMO_DIR", "/opt/gantry/demo"))
pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    requires(can_run_containers(), "needs root, runc, conmon and busybox-static"),
    requires(
        (DEMO / "on-off" / "index.json").exists(),
        "the demo images are built by `./gantry setup dev` (./gantry test does it)",
    ),
]
STEP_TIMEOUT = 30_000


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    port = free_port()
    s = Stack(extra_env={"GANTRY_DEMO": "1", "GANTRY_REGISTRY_PORT": str(port)})
    s.env["GANTRY_REGISTRY_DIR"] = str(s.tmp / "registry")
    (s.tmp / "mnt").mkdir()
    Path(s.env["GANTRY_CONFIG"]).write_text(
        json.dumps(
            {
                "volume_allowlist": [str(s.tmp / "mnt")],
                "insecure_registries": [f"127.0.0.1:{port}"],
            }
        )
    )
    s.image = f"127.0.0.1:{port}/gantry/on-off:latest"  # type: ignore[attr-defined]
    yield s.start(timeout=300)
    s.stop()


def log_in(page: Page, stack: Stack, user: str = "admin", password: str | None = None) -> None:
    page.goto(stack.url + "/login/")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password or stack.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/containers/")


def check_turns_green(page: Page, stack: Stack, check: str) -> None:
    page.goto(stack.url + "/lab/")
    expect(page.locator(f"li[data-check='{check}']")).to_have_attribute(
        "data-done", "true", timeout=STEP_TIMEOUT
    )


def test_the_lab_clicked_through(stack: Stack, browser: Any, shots: Any) -> None:
    image = stack.image  # type: ignore[attr-defined]
    mnt = stack.tmp / "mnt"
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())
    page.set_default_timeout(STEP_TIMEOUT)
    log_in(page, stack)

    # the lab page, before anything
    page.get_by_role("link", name="Lab").click()
    page.locator("#lab-image").fill(image)
    page.get_by_role("button", name="Start the lab").click()
    expect(page.locator("li[data-check='pulled']")).to_have_attribute("data-done", "false")
    shots(page, "lab-start")

    # 1. pull, with a progress bar per layer that finishes
    page.get_by_role("link", name="Images").click()
    page.locator("#pull-ref").fill(image)
    page.get_by_role("button", name="Pull").click()
    job = page.locator("article.pull-job").first
    expect(job.locator("li.pull-layer").first).to_be_visible()
    shots(page, "pulling")
    expect(job).to_have_attribute("data-state", "done", timeout=120_000)
    bars = job.locator("li.pull-layer progress")
    for i in range(bars.count()):
        assert bars.nth(i).get_attribute("value") == bars.nth(i).get_attribute("max")
    # the server rendered each row's words, as podman prints them
    expect(job.locator("li.pull-layer .layer-text").first).to_have_text(re.compile(r" · done$"))
    shots(page, "pulled")
    check_turns_green(page, stack, "pulled")

    # 2. create with -v /mnt:/mnt (the host side is this test's own directory)
    page.goto(stack.url + "/containers/new")
    page.get_by_label("Image").fill(image)
    page.get_by_label("Name").fill("on-off")
    page.get_by_label("Volumes").fill(f"{mnt}:/mnt")
    shots(page, "create-form")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url("**/containers/*/")
    container_id = page.url.rstrip("/").split("/")[-1]
    expect(page.locator("#container-steps .step.done")).not_to_have_count(0)
    shots(page, "container-overview")
    check_turns_green(page, stack, "created")

    # 3. mount and browse: touch test in the explorer
    page.goto(f"{stack.url}/containers/{container_id}/storage/")
    page.get_by_role("button", name="Mount", exact=True).click()
    expect(page.locator("#mount-count")).to_have_text("1")
    shots(page, "storage-mounted")
    page.goto(f"{stack.url}/containers/{container_id}/files/")
    page.locator("#touch-name").fill("test")
    page.get_by_role("button", name="Touch", exact=True).click()
    expect(page.locator("tr.t-file", has_text="test").locator(".mark.A")).to_be_visible()
    shots(page, "files-test")
    check_turns_green(page, stack, "test_file")

    # 4. config.json: generate, change an env value, a broken edit shows its error, fix it
    page.goto(f"{stack.url}/containers/{container_id}/spec/")
    page.get_by_test_id("spec-generate").click()
    text = page.get_by_test_id("spec-text")
    expect(text).to_contain_text('"ociVersion"')
    spec = json.loads(text.input_value())
    spec["process"]["env"].append("LAB_GREETING=hello")
    text.fill(json.dumps(spec, indent=2))
    page.get_by_test_id("spec-save").click()
    expect(page.locator("#spec-result")).to_contain_text("aved")
    broken = dict(spec, process=dict(spec["process"], args=[]))
    text.fill(json.dumps(broken, indent=2))
    page.get_by_test_id("spec-save").click()
    expect(page.locator("#spec-result")).to_contain_text("process.args")
    assert '"args": []' in text.input_value()  # the draft stays in the editor
    shots(page, "spec-error")
    text.fill(json.dumps(spec, indent=2))
    page.get_by_test_id("spec-save").click()
    expect(page.locator("#spec-result")).to_contain_text("aved")
    check_turns_green(page, stack, "config")

    # 5. start: /mnt/on does not exist, so it exits at once with 0
    page.goto(f"{stack.url}/containers/{container_id}/run/")
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-state")).to_have_text("exited", timeout=STEP_TIMEOUT)
    expect(page.get_by_test_id("run-exit-code")).to_contain_text("0")
    shots(page, "first-start-exited")
    check_turns_green(page, stack, "first_exit")

    # 6. create /mnt/on (the engine does it in the volume's host directory)
    page.locator("li[data-check='mnt_on'] button").click()
    expect(page.locator("li[data-check='mnt_on']")).to_have_attribute("data-done", "true")
    assert (mnt / "on").exists()

    # 7. start again: Up, running top
    page.goto(f"{stack.url}/containers/{container_id}/run/")
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-state")).to_have_text("running")
    shots(page, "second-start-up")
    check_turns_green(page, stack, "top_running")

    # 8. an exec terminal: ls shows test
    page.goto(f"{stack.url}/containers/{container_id}/terminal/")
    page.get_by_role("button", name="New shell").click()
    pane = page.locator(".term-pane:not([hidden])")
    expect(pane.locator(".term-status")).to_have_text("attached")
    page.keyboard.type("ls /\n")
    expect(pane.locator(".xterm-rows")).to_contain_text("test")
    shots(page, "terminal-ls")
    page.keyboard.type("exit\n")
    expect(pane.locator(".term-status")).to_contain_text("code 0")
    check_turns_green(page, stack, "exec_saw_test")

    # 9. kill and remove
    page.goto(f"{stack.url}/containers/{container_id}/run/")
    page.get_by_test_id("run-kill").click()
    expect(page.get_by_test_id("run-state")).to_have_text("exited")
    page.get_by_test_id("run-remove").click()
    page.wait_for_url("**/containers/")
    check_turns_green(page, stack, "gone")
    expect(page.locator("li.lab-check.done")).to_have_count(9)
    expect(page.locator(".lab-done")).to_be_visible()
    shots(page, "lab-all-green")
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def test_a_second_user_sees_none_of_it(stack: Stack, browser: Any, shots: Any) -> None:
    stack.add_user("bob", "bob-pass-1234")
    admin = stack.login()
    r = admin.post(
        f"{stack.url}/containers/new",
        data={
            "image": stack.image,  # type: ignore[attr-defined]
            "name": "admins-own",
        },
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 302
    theirs = r.headers["Location"].rstrip("/").split("/")[-1]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    log_in(page, stack, "bob", "bob-pass-1234")
    expect(page.locator("#container-table, .table-wrap").first).to_be_visible()
    assert "admins-own" not in page.content()
    shots(page, "second-user-containers")
    assert page.goto(f"{stack.url}/containers/{theirs}/").status == 404
    page.goto(stack.url + "/lab/")
    expect(page.get_by_role("button", name="Start the lab")).to_be_visible()
    context.close()


def learner_creates_on_off(page: Page, stack: Stack, name: str) -> str:
    """As the seed: podman pull IMAGE, podman create --name on-off -v /mnt:/mnt IMAGE;
    answers the id. (Each learner pulls: the test must not lean on an earlier test's pull.)"""
    log_in(page, stack, name, f"{name}-pass-1234")
    page.goto(stack.url + "/lab/")
    page.locator("#lab-image").fill(stack.image)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Start the lab").click()
    page.goto(stack.url + "/images/")
    page.locator("#pull-ref").fill(stack.image)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Pull").click()
    expect(page.locator("article.pull-job").first).to_have_attribute(
        "data-state", "done", timeout=120_000
    )
    page.goto(stack.url + "/containers/new")
    page.get_by_label("Image").fill(stack.image)  # type: ignore[attr-defined]
    page.get_by_label("Name").fill("on-off")
    page.get_by_label("Volumes").fill("/mnt:/mnt")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url("**/containers/*/")
    return page.url.rstrip("/").split("/")[-1]


def start_and_see(page: Page, stack: Stack, container_id: str, state: str) -> None:
    page.goto(f"{stack.url}/containers/{container_id}/run/")
    page.get_by_test_id("run-start").click()
    expect(page.get_by_test_id("run-state")).to_have_text(state, timeout=STEP_TIMEOUT)


def test_two_learners_and_an_instructor_at_once(stack: Stack, browser: Any, shots: Any) -> None:
    """Both type the seed's words at the same time; ann creates /mnt/on by hand in her Host
    files and gets top; cid's first start still exits 0 (his /mnt is his own); the
    instructor sees both on the Class page."""
    for name in ("ann", "cid", "kim"):
        stack.add_user(name, f"{name}-pass-1234")
    stack.manage("users", "role", "kim", "instructor")
    ann_page = browser.new_context().new_page()
    cid_page = browser.new_context().new_page()
    ann = learner_creates_on_off(ann_page, stack, "ann")
    cid = learner_creates_on_off(cid_page, stack, "cid")
    assert ann != cid  # the same name, each their own
    ann_page.goto(stack.url + "/lab/host-files")
    ann_page.get_by_label("Path").fill("/mnt/on")
    ann_page.get_by_role("button", name="Touch").click()
    expect(ann_page.get_by_role("status")).to_contain_text("Created /mnt/on")
    start_and_see(ann_page, stack, ann, "running")
    start_and_see(cid_page, stack, cid, "exited")
    expect(cid_page.get_by_test_id("run-exit-code")).to_contain_text("0")
    shots(cid_page, "cid-first-start-exits-0")
    assert cid_page.goto(f"{stack.url}/containers/{ann}/").status == 404  # not his

    teacher = browser.new_context(viewport={"width": 1366, "height": 800}).new_page()
    log_in(teacher, stack, "kim", "kim-pass-1234")
    teacher.get_by_role("link", name="Class").click()
    for name in ("ann", "cid"):
        expect(teacher.locator(f"tr[data-learner='{name}']")).to_contain_text(f"{name}.on-off")
    expect(teacher.locator("tr[data-learner='ann']")).to_contain_text("Up ")
    expect(teacher.locator("tr[data-learner='cid']")).to_contain_text("Exited (0)")
    expect(teacher.locator("tr[data-learner='ann']").get_by_test_id("disk-use")).to_contain_text(
        "of 1.0 GiB"
    )
    shots(teacher, "class")
    # live: ann kills her top; the open Class page follows (coalesced, not reloaded by hand)
    ann_page.goto(f"{stack.url}/containers/{ann}/run/")
    ann_page.get_by_test_id("run-kill").click()
    expect(teacher.locator("tr[data-learner='ann']")).to_contain_text(
        "Exited", timeout=STEP_TIMEOUT
    )
    for page in (ann_page, cid_page, teacher):
        page.context.close()
