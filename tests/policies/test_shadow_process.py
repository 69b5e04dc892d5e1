"""The shadow process on its own: it runs and compares copies, stays out of the clients' way, and ends."""

from __future__ import annotations

import asyncio
import json
import os
import time

from gateway.shadow.compare import Answer
from gateway.shadow.process import ShadowProcess, ShadowUnavailable

APPS = {"recorder": "tests.fixtures.wsgi_apps:recorder", "fail": "tests.fixtures.wsgi_apps:fail"}
ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/things",
    "QUERY_STRING": "",
    "SERVER_NAME": "gateway",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_USER": "alice",
    "wsgi.url_scheme": "http",
}


def seen(**changes) -> dict:
    return {
        "method": "GET", "script_name": "", "path_info": "/things", "query": "", "remote_user": "alice",
        "content_length": None, "body_len": 0, "headers": {}, **changes,
    }


def answer(data: dict, status: int = 200) -> Answer:
    return Answer(status, b"application/json", json.dumps(data).encode())


async def test_it_runs_copies_and_compares_them_there():
    process = ShadowProcess(APPS)
    try:
        await process.warm()
        same = await process.run("recorder", ENVIRON, 1 << 20, answer(seen()), frozenset(), "flask")
        assert same == ("match",)
        kind, mismatch = await process.run("recorder", ENVIRON, 1 << 20, answer(seen(remote_user="bob")), frozenset(), "flask")
        assert kind == "mismatch" and mismatch.status == [200, 200]
        assert '-  "remote_user": "bob"' in mismatch.diff and '+  "remote_user": "alice"' in mismatch.diff
        assert mismatch.diff.startswith("--- flask\n+++ recorder")
        ignored = await process.run("recorder", ENVIRON, 1 << 20, answer(seen(remote_user="bob")), frozenset({"remote_user"}), "flask")
        assert ignored == ("match",)
        assert await process.run("recorder", ENVIRON, 10, answer(seen()), frozenset(), "flask") == ("skipped",)
        kind, message = await process.run("fail", ENVIRON, 1 << 20, answer({}), frozenset(), "flask")
        assert kind == "error" and "boom" in message
        # Copies sent together are answered each with its own result.
        results = await asyncio.gather(*(process.run("recorder", dict(ENVIRON, PATH_INFO=f"/{i}"), 1 << 20, answer(seen(path_info=f"/{i}")), frozenset(), "f") for i in range(20)))
        assert results == [("match",)] * 20
    finally:
        process.close()


async def test_it_runs_at_the_lowest_cpu_priority():
    process = ShadowProcess(APPS)
    try:
        await process.warm()
        assert os.sched_getscheduler(process.pid) == os.SCHED_IDLE
    finally:
        process.close()


async def test_closing_it_ends_the_process():
    process = ShadowProcess(APPS)
    await process.warm()
    proc = process.proc
    process.close()
    for _ in range(200):
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.025)
    assert proc.poll() is not None
    try:
        await process.run("recorder", ENVIRON, 1 << 20, answer(seen()), frozenset(), "flask")
    except ShadowUnavailable as exc:
        assert "closed" in str(exc)
    else:
        raise AssertionError("a closed shadow process ran a copy")


async def test_a_process_that_keeps_dying_is_restarted_after_growing_pauses(caplog):
    process = ShadowProcess({"broken": "tests.fixtures.no_such_module:app"})
    try:
        await process.warm(timeout=30)
        assert "did not start" in caplog.text
        seen: list[tuple[object, float]] = []  # each new process, when first seen
        copies = 0
        deadline = time.monotonic() + 60  # waits on the third replacement; generous for a loaded machine
        while len(seen) < 3 and time.monotonic() < deadline:
            try:
                await process.run("broken", ENVIRON, 1 << 20, answer({}), frozenset(), "flask")
            except ShadowUnavailable:
                pass
            copies += 1
            if process.proc not in [proc for proc, _ in seen]:
                seen.append((process.proc, time.monotonic()))
            await asyncio.sleep(0.01)
        assert len(seen) == 3, f"{len(seen)} processes in 60 s"
        # Not one process per copy: the first death is replaced at once, the next after 1 s, then 2 s.
        # Lower bounds only: a loaded machine can lengthen a pause, never shorten it.
        assert copies > 10 * len(seen), copies
        assert seen[2][1] - seen[1][1] >= 0.9, [t for _, t in seen]
    finally:
        process.close()


async def test_it_rests_after_each_copy_to_keep_within_its_duty_cycle():
    process = ShadowProcess({"busy": "tests.fixtures.wsgi_apps:busy"}, duty_cycle=0.25)
    try:
        await process.warm()
        environ = dict(ENVIRON, QUERY_STRING="ms=20")
        started = time.perf_counter()
        results = await asyncio.gather(*(process.run("busy", environ, 1 << 20, answer({"busy": True}), frozenset(), "f") for _ in range(5)))
        elapsed = time.perf_counter() - started
        assert results == [("match",)] * 5
        # 20 ms of CPU each at a quarter of a core: 80 ms per copy, the last one's rest not waited for.
        assert elapsed >= 4 * 0.080 + 0.020 - 0.01, elapsed
        process.duty_cycle = 1.0  # a reload changes it for the next copies
        started = time.perf_counter()
        await asyncio.gather(*(process.run("busy", environ, 1 << 20, answer({"busy": True}), frozenset(), "f") for _ in range(5)))
        assert time.perf_counter() - started < elapsed
    finally:
        process.close()


async def test_a_copy_running_when_the_process_dies_fails_at_once():
    process = ShadowProcess({"slow": "tests.fixtures.wsgi_apps:slow"})
    try:
        await process.warm()
        running = asyncio.ensure_future(process.run("slow", dict(ENVIRON, QUERY_STRING="s=20"), 1 << 20, answer({}), frozenset(), "f"))
        await asyncio.sleep(0.2)
        os.kill(process.pid, 9)
        async with asyncio.timeout(5):  # not after the 20 s the copy would have taken
            try:
                await running
            except ShadowUnavailable as exc:
                assert "exited" in str(exc)
            else:
                raise AssertionError("the copy did not fail with its process")
    finally:
        process.close()


def shadow_children() -> list[int]:
    """This process's children that are shadow processes (running or <defunct>)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid() and "python" in stat:
            children.append(int(entry))
    return children


async def test_callers_that_ask_before_it_runs_share_one_process():
    """A reload's warm_soon(), the lifespan's warm() and a first copy can all ask while the process
    starts: one process serves them all (two left one unread channel, a broken pipe and a zombie)."""
    before = set(shadow_children())
    process = ShadowProcess(APPS)
    try:
        process.warm_soon()
        await asyncio.gather(process.warm(), process.run("recorder", ENVIRON, 1 << 20, answer(seen()), frozenset(), "flask"))
        assert set(shadow_children()) - before == {process.pid}
    finally:
        await process.aclose()
    assert set(shadow_children()) == before, "aclose() collects it"


async def test_aclose_ends_a_process_stuck_in_a_copy_and_collects_it():
    process = ShadowProcess({"slow": "tests.fixtures.wsgi_apps:slow"})
    await process.warm()
    proc = process.proc
    running = asyncio.ensure_future(process.run("slow", dict(ENVIRON, QUERY_STRING="s=20"), 1 << 20, answer({}), frozenset(), "f"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await process.aclose(timeout=0.5)
    assert time.monotonic() - started < 5
    assert proc.returncode is not None, "killed and collected: never left <defunct>"
    try:
        await running
    except ShadowUnavailable:
        pass


async def test_closing_it_while_it_loads_writes_no_traceback(capfd):
    process = ShadowProcess(APPS)
    process.warm_soon()
    while process.proc is None:
        await asyncio.sleep(0.001)
    await process.aclose()
    assert process.proc.returncode is not None
    assert "Traceback" not in capfd.readouterr().err
