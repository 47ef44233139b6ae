"""The requests adapter: ``requests.Session().auth = PlanetAuth...``.

Installed with the ``requests`` extra, from a clone of the repository:
``python3 -m pip install '.[requests]'``.
"""

from __future__ import annotations

from typing import Any

from ._adapter import AuthAdapter
from ._extras import missing_extra

try:
    import requests
    import requests.auth
except ImportError:  # pragma: no cover - exercised in a subprocess without the extra
    raise missing_extra("planet_async.requests", "requests") from None

__all__ = ["PlanetAuth"]


class PlanetAuth(AuthAdapter, requests.auth.AuthBase):
    """Authenticates `requests` calls to Planet's APIs, with an OAuth2 session or an API key.

    Pass it as ``requests.Session().auth`` or per call (``requests.get(url, auth=auth)``). It has
    the constructors of every adapter (`from_user_default_session`, `from_profile`,
    `from_client_credentials`, `from_api_key`, `for_user`, ...); logins are blocking calls under
    `sync` (``auth.sync.login_with_device()``). One instance serves any number of threads.

    A fresh token's header is read from memory. A renewal runs on the process's renewal loop (a
    daemon thread with an event loop, started on first use and again after a ``fork``), once for
    every thread that waits for it; past the refresh-ahead threshold it runs there in the
    background while the current token keeps serving.

    The header goes only to allowlisted origins (Planet's API origins by default). requests
    removes ``Authorization`` when a redirect changes origin, except from ``http`` to ``https``
    on the same host and default ports, and the allowlist takes such an ``http`` origin only
    with its ``https`` twin; this adapter never adds its header to a redirect (a redirect to
    another allowlisted host arrives without credentials). When an allowlisted
    origin answers 401 to the current token, the token is renewed once and the request resent,
    if its body can be sent again (bytes, text, a form; not a file or a generator, which were
    consumed: then the 401 is the answer, and the renewed token serves the next call).
    """

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self._allows(request.url):
            return request
        header = self.header_sync()
        request.headers["Authorization"] = header
        request.register_hook("response", self._on_response)
        return request

    def _allows(self, url: str | bytes | None) -> bool:
        if url is None:
            return False
        return self._policy.allows_url(url.decode() if isinstance(url, bytes) else url)

    def _ours(self, header: str) -> bool:
        """Whether `header` is one this adapter set (a bearer token or its API key)."""
        if self.manager is None:
            return header == self._api_key_header
        return header.startswith("Bearer ")

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401:
            return response
        request = response.request
        sent = request.headers.get("Authorization")
        if not isinstance(sent, str) or not self._ours(sent) or not self._allows(request.url):
            return response  # a redirect's target, which got no credentials from us
        retry = self.retry_header_sync(sent)
        if retry is None or not _replayable(request.body):
            return response
        response.content  # noqa: B018 - read it, so the connection can be reused
        response.close()
        again = request.copy()
        again.headers["Authorization"] = retry
        resent: requests.Response = response.connection.send(again, **kwargs)
        resent.history.append(response)
        resent.request = again
        return resent


def _replayable(body: object) -> bool:
    """Whether requests can send this prepared body again: an in-memory one can; a file or a
    generator was read by the first attempt."""
    return body is None or isinstance(body, (bytes, str))
