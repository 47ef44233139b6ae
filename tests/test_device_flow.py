"""The device authorization grant (RFC 8628): polling rules, errors, cancellation, serialization."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from planet_async import (
    AuthorizationServer,
    DeviceAuthorization,
    DeviceCodeFlow,
    DeviceFlowState,
    HttpxTransport,
    InvalidClientError,
    InvalidTokenResponse,
    LoginDenied,
    LoginTimeout,
    PublicClient,
    TokenSet,
)
from tests._helpers import FakeClock, token_response

pytestmark = pytest.mark.anyio

DEVICE_URL = "https://auth.test/device"
TOKEN_URL = "https://auth.test/token"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEVICE_CODE = "dc-7f3a9c-very-secret-device-code"
USER_CODE = "WDJB-MJHT"
VERIFY_URL = "https://auth.test/activate"


def pending_error(error: str = "authorization_pending") -> httpx.Response:
    return httpx.Response(400, json={"error": error})


class FakeServer:
    """A device authorization endpoint and a token endpoint that answer from a script.

    `device` is the device authorization response; `polls` are the token endpoint's answers in
    order (the last one repeats). Every request is recorded.
    """

    def __init__(
        self,
        polls: list[httpx.Response] | None = None,
        *,
        device: httpx.Response | None = None,
        on_poll: Callable[[int], None] | None = None,
    ) -> None:
        self.device = device or httpx.Response(
            200,
            json={
                "device_code": DEVICE_CODE,
                "user_code": USER_CODE,
                "verification_uri": VERIFY_URL,
                "verification_uri_complete": f"{VERIFY_URL}?user_code={USER_CODE}",
                "expires_in": 600,
                "interval": 5,
            },
        )
        self.polls = polls or [token_response("at-1", refresh_token="rt-1")]
        self.on_poll = on_poll
        self.device_requests: list[dict[str, str]] = []
        self.token_requests: list[dict[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        if str(request.url) == DEVICE_URL:
            self.device_requests.append(form)
            return _copy(self.device)
        assert str(request.url) == TOKEN_URL
        self.token_requests.append(form)
        if self.on_poll is not None:
            self.on_poll(len(self.token_requests))
        index = min(len(self.token_requests), len(self.polls)) - 1
        return _copy(self.polls[index])

    def server(self) -> AuthorizationServer:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return AuthorizationServer(
            token_endpoint=TOKEN_URL,
            device_authorization_endpoint=DEVICE_URL,
            transport=HttpxTransport(http),
        )


def _copy(response: httpx.Response) -> httpx.Response:
    # A scripted response may be answered many times: hand httpx a fresh object each time.
    return httpx.Response(response.status_code, headers=response.headers, content=response.content)


class Sleeper:
    """An injected `sleep` that records each wait and moves the fake clock instead of waiting.

    A flow that would poll more than `limit` times fails the test at once instead of spinning.
    """

    def __init__(self, clock: FakeClock, limit: int = 100) -> None:
        self.clock = clock
        self.limit = limit
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        if len(self.waits) >= self.limit:
            raise AssertionError(f"the flow kept polling: {len(self.waits)} waits")
        self.waits.append(seconds)
        self.clock.advance(seconds)
        await anyio.lowlevel.checkpoint()


def make_flow(fake: FakeServer, **kwargs: Any) -> tuple[DeviceCodeFlow, Sleeper]:
    clock = FakeClock()
    sleeper = Sleeper(clock)
    flow = DeviceCodeFlow(
        fake.server(), PublicClient(client_id="cli-app"), clock=clock, sleep=sleeper, **kwargs
    )
    return flow, sleeper


def device_response(**overrides: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "device_code": DEVICE_CODE,
        "user_code": USER_CODE,
        "verification_uri": VERIFY_URL,
        "expires_in": 600,
        "interval": 5,
    }
    body.update(overrides)
    return httpx.Response(200, json={k: v for k, v in body.items() if v is not None})


async def test_success_returns_the_token_set() -> None:
    """After approval the flow returns the token endpoint's tokens and is COMPLETE."""
    fake = FakeServer([pending_error(), token_response("at-1", refresh_token="rt-1")])
    flow, sleeper = make_flow(fake)
    states = [flow.state]
    pending = await flow.start()
    states.append(flow.state)
    assert states == [DeviceFlowState.NEW, DeviceFlowState.AWAITING_USER]
    token = await flow.complete(pending)
    assert isinstance(token, TokenSet)
    assert token.access_token.get_secret_value() == "at-1"
    assert token.refresh_token is not None
    assert token.refresh_token.get_secret_value() == "rt-1"
    assert flow.state is DeviceFlowState.COMPLETE
    assert sleeper.waits == [5, 5]


async def test_device_request_sends_client_id_and_default_scopes() -> None:
    """The device authorization request carries the client id and `planet offline_access`."""
    fake = FakeServer()
    flow, _ = make_flow(fake)
    await flow.start()
    assert fake.device_requests == [{"client_id": "cli-app", "scope": "planet offline_access"}]
    assert fake.token_requests == []


async def test_token_request_sends_the_device_code_grant() -> None:
    """Each poll posts the device_code grant type, the device code and the client id."""
    fake = FakeServer()
    flow, _ = make_flow(fake)
    await flow.complete(await flow.start())
    assert fake.token_requests == [
        {"grant_type": DEVICE_GRANT, "device_code": DEVICE_CODE, "client_id": "cli-app"}
    ]


async def test_authorization_pending_keeps_the_interval() -> None:
    """`authorization_pending` polls again after the same interval."""
    fake = FakeServer([pending_error()] * 4 + [token_response()])
    flow, sleeper = make_flow(fake)
    await flow.complete(await flow.start())
    assert sleeper.waits == [5, 5, 5, 5, 5]
    assert len(fake.token_requests) == 5


async def test_slow_down_adds_five_seconds_each_time() -> None:
    """Each `slow_down` adds exactly 5 s to the interval, and the new interval sticks."""
    polls = [
        pending_error("slow_down"),
        pending_error(),
        pending_error("slow_down"),
        pending_error("slow_down"),
        pending_error(),
        token_response(),
    ]
    fake = FakeServer(polls)
    flow, sleeper = make_flow(fake)
    await flow.complete(await flow.start())
    assert sleeper.waits == [5, 10, 10, 15, 20, 20]


async def test_expired_token_is_a_login_timeout() -> None:
    """`expired_token` stops polling with LoginTimeout and leaves the flow EXPIRED."""
    fake = FakeServer([pending_error(), pending_error("expired_token"), token_response()])
    flow, _ = make_flow(fake)
    pending = await flow.start()
    with pytest.raises(LoginTimeout, match="expired"):
        await flow.complete(pending)
    assert flow.state is DeviceFlowState.EXPIRED
    assert len(fake.token_requests) == 2


async def test_access_denied_is_login_denied() -> None:
    """`access_denied` stops polling with LoginDenied and leaves the flow DENIED."""
    fake = FakeServer([pending_error(), pending_error("access_denied"), token_response()])
    flow, _ = make_flow(fake)
    pending = await flow.start()
    with pytest.raises(LoginDenied, match="declined"):
        await flow.complete(pending)
    assert flow.state is DeviceFlowState.DENIED
    assert len(fake.token_requests) == 2


async def test_no_interval_means_five_seconds() -> None:
    """Without an `interval` in the response the flow polls every 5 s (RFC 8628 3.2)."""
    fake = FakeServer([pending_error(), token_response()], device=device_response(interval=None))
    flow, sleeper = make_flow(fake)
    pending = await flow.start()
    assert pending.interval == 5
    await flow.complete(pending)
    assert sleeper.waits == [5, 5]


async def test_default_interval_override() -> None:
    """`default_interval` replaces the 5 s default, but not an interval the server sent."""
    fake = FakeServer([pending_error(), token_response()], device=device_response(interval=None))
    flow, sleeper = make_flow(fake, default_interval=2.0)
    await flow.complete(await flow.start())
    assert sleeper.waits == [2, 2]

    fake = FakeServer([pending_error(), token_response()], device=device_response(interval=7))
    flow, sleeper = make_flow(fake, default_interval=2.0)
    await flow.complete(await flow.start())
    assert sleeper.waits == [7, 7]


async def test_code_lifetime_bounds_the_polling() -> None:
    """When `expires_in` passes without approval the flow stops with LoginTimeout, after the
    polls that fit in the code's lifetime and no more."""
    fake = FakeServer([pending_error()], device=device_response(expires_in=30, interval=5))
    flow, sleeper = make_flow(fake)
    started = sleeper.clock()
    pending = await flow.start()
    with pytest.raises(LoginTimeout):
        await flow.complete(pending)
    assert flow.state is DeviceFlowState.EXPIRED
    assert len(fake.token_requests) == 5  # at 5, 10, 15, 20 and 25 s; 30 s is the expiry
    assert sleeper.waits == [5] * 5
    assert sleeper.clock() - started <= 30


async def test_server_failure_while_polling_backs_off_and_recovers() -> None:
    """5xx and 429 answers do not end the login: the interval grows (to Retry-After if longer)
    and polling goes on until the tokens come."""
    polls = [
        httpx.Response(503, text="maintenance"),
        httpx.Response(429, headers={"Retry-After": "30"}, json={"error": "too_many"}),
        pending_error(),
        token_response("at-after-outage"),
    ]
    fake = FakeServer(polls)
    flow, sleeper = make_flow(fake)
    token = await flow.complete(await flow.start())
    assert token.access_token.get_secret_value() == "at-after-outage"
    assert sleeper.waits == [5, 10, 30, 30]
    assert flow.state is DeviceFlowState.COMPLETE


async def test_invalid_client_while_polling_is_raised() -> None:
    """`invalid_client` is no reason to keep polling: it is raised as InvalidClientError."""
    fake = FakeServer([httpx.Response(401, json={"error": "invalid_client"}), token_response()])
    flow, _ = make_flow(fake)
    with pytest.raises(InvalidClientError) as info:
        await flow.complete(await flow.start())
    assert info.value.error == "invalid_client"
    assert len(fake.token_requests) == 1


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (device_response(user_code=None), "unusable device authorization response"),
        (device_response(device_code=None), "unusable device authorization response"),
        (device_response(expires_in="soon"), "unusable device authorization response"),
        (httpx.Response(200, html="<html>Sign in</html>"), "text/html"),
        (httpx.Response(200, json=["not", "an", "object"]), "not a JSON object"),
    ],
    ids=["no user_code", "no device_code", "bad expires_in", "html", "json array"],
)
async def test_malformed_device_authorization(response: httpx.Response, expected: str) -> None:
    """A device authorization response that cannot be used raises InvalidTokenResponse naming
    the endpoint and what was wrong."""
    fake = FakeServer(device=response)
    flow, _ = make_flow(fake)
    with pytest.raises(InvalidTokenResponse) as info:
        await flow.start()
    assert expected in str(info.value)
    assert DEVICE_URL in str(info.value)
    assert info.value.endpoint == DEVICE_URL
    assert flow.state is DeviceFlowState.NEW


async def test_cancelling_stops_polling_promptly() -> None:
    """A cancel scope cancelled from another task stops a polling flow (real sleeps) at once,
    and no poll happens afterwards."""
    second_poll = anyio.Event()

    def on_poll(count: int) -> None:
        if count == 2:
            second_poll.set()

    fake = FakeServer([pending_error()], device=device_response(interval=0.05), on_poll=on_poll)
    flow = DeviceCodeFlow(fake.server(), PublicClient(client_id="cli-app"))  # real anyio.sleep
    pending = await flow.start()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def poll() -> None:
                with scope:
                    await flow.complete(pending)

            tg.start_soon(poll)
            await second_poll.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert len(fake.token_requests) == 2
    await anyio.sleep(0.2)  # four intervals: a flow that kept polling would have polled again
    assert len(fake.token_requests) == 2
    assert flow.state is DeviceFlowState.AWAITING_USER


async def test_device_authorization_round_trips_with_its_device_code() -> None:
    """to_json/from_json keeps the device code, so another process can finish the login."""
    fake = FakeServer()
    flow, _ = make_flow(fake)
    pending = await flow.start()
    text = pending.to_json()
    assert DEVICE_CODE in text
    loaded = DeviceAuthorization.from_json(text)
    assert loaded == pending
    assert loaded.device_code.get_secret_value() == DEVICE_CODE
    token = await flow.complete(loaded)
    assert token.access_token.get_secret_value() == "at-1"
    assert fake.token_requests[0]["device_code"] == DEVICE_CODE


async def test_device_code_is_hidden() -> None:
    """repr, str and model_dump_json of a DeviceAuthorization do not show the device code."""
    flow, _ = make_flow(FakeServer())
    pending = await flow.start()
    for text in (repr(pending), str(pending), pending.model_dump_json()):
        assert DEVICE_CODE not in text
        assert USER_CODE in text  # the user code is shown to the user; not a secret
    assert DEVICE_CODE not in repr(flow)


async def test_instructions_name_the_code_and_the_url() -> None:
    """instructions() tells the user where to go and which code to type."""
    flow, _ = make_flow(FakeServer())
    pending = await flow.start()
    text = pending.instructions()
    assert USER_CODE in text
    assert VERIFY_URL in text
    assert f"{VERIFY_URL}?user_code={USER_CODE}" in text
    assert DEVICE_CODE not in text
