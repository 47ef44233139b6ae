"""The renewal loop's thread switch interval: shortened while an off-loop renewal runs, and
given back as it was."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import anyio
import pytest

from planet_async._background import _RENEWING_INTERVAL, _SwitchInterval, renewal_loop

pytestmark = pytest.mark.anyio


@pytest.fixture
def interval() -> Iterator[float]:
    """The interpreter's switch interval, put back after the test whatever it did."""
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


async def test_an_off_loop_call_runs_with_the_short_interval_and_gives_it_back(
    interval: float,
) -> None:
    """While calls handed to the renewal loop run, the switch interval is the short one; when
    the last of three overlapping calls ends, it is the program's again."""
    seen: list[float] = []
    started = threading.Semaphore(0)
    releases = [threading.Event() for _ in range(3)]
    finished = [anyio.Event() for _ in range(3)]

    async def call(release: threading.Event) -> None:  # runs on the renewal loop
        seen.append(sys.getswitchinterval())
        started.release()
        await anyio.to_thread.run_sync(release.wait, 10)

    async def one(index: int) -> None:
        await renewal_loop().run_here(call, releases[index])
        finished[index].set()

    with anyio.fail_after(20):  # a guard against a hang
        async with anyio.create_task_group() as tasks:
            for index in range(3):
                tasks.start_soon(one, index)
            for _ in range(3):
                await anyio.to_thread.run_sync(started.acquire)
            for index in range(2):
                releases[index].set()
                await finished[index].wait()
                assert sys.getswitchinterval() == pytest.approx(_RENEWING_INTERVAL)
            releases[2].set()
    assert seen == [pytest.approx(_RENEWING_INTERVAL)] * 3
    assert sys.getswitchinterval() == pytest.approx(interval)


def test_nested_shortening_gives_back_the_interval_once(interval: float) -> None:
    """Overlapping renewals shorten the interval once and give it back when the last ends."""
    switching = _SwitchInterval()
    sys.setswitchinterval(0.004)
    switching.shorten()
    switching.shorten()
    assert sys.getswitchinterval() == pytest.approx(_RENEWING_INTERVAL)
    switching.restore()
    assert sys.getswitchinterval() == pytest.approx(_RENEWING_INTERVAL)
    switching.restore()
    assert sys.getswitchinterval() == pytest.approx(0.004)


def test_an_interval_the_program_set_meanwhile_is_kept(interval: float) -> None:
    """A program that sets its own interval while a renewal runs keeps it after the renewal."""
    switching = _SwitchInterval()
    switching.shorten()
    sys.setswitchinterval(0.01)
    switching.restore()
    assert sys.getswitchinterval() == pytest.approx(0.01)


def test_a_shorter_interval_of_the_programs_is_left_alone(interval: float) -> None:
    """A program already switching faster than the renewal's interval keeps its own."""
    switching = _SwitchInterval()
    sys.setswitchinterval(_RENEWING_INTERVAL / 5)
    switching.shorten()
    assert sys.getswitchinterval() == pytest.approx(_RENEWING_INTERVAL / 5)
    switching.restore()
    assert sys.getswitchinterval() == pytest.approx(_RENEWING_INTERVAL / 5)
