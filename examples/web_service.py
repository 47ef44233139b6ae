"""A web service whose users log in with Planet: FastAPI, several replicas, one Redis.

Each user logs in with Planet in their browser (authorization code + PKCE, as a confidential
client); the service keeps their Planet session on the server, renews it when they come back, and
lists their data through Planet's API with their own token. Run it as any number of replicas
behind a load balancer, all on one Redis:

    PLANET_WEB_CLIENT_ID=... PLANET_WEB_CLIENT_SECRET=... PLANET_WEB_SESSION_SECRET=... \\
    PLANET_WEB_REDIS_URL=redis://127.0.0.1:6379/0 PLANET_WEB_BASE_URL=https://app.example \\
    uvicorn examples.web_service:app --port 8000

Settings, from the environment (this project's tests point them at a local provider and API):

    PLANET_WEB_ISSUER          the authorization server (Planet's)
    PLANET_WEB_CLIENT_ID       the web service's registered client id (a confidential client)
    PLANET_WEB_CLIENT_SECRET   its secret
    PLANET_WEB_SCOPES          scopes to ask for ("openid planet offline_access")
    PLANET_WEB_DATA_URL        the API URL that lists a user's data; "{user}" in it becomes the
                               user's id (Planet's Data API searches by default)
    PLANET_WEB_REDIS_URL       the Redis every replica shares; without it, one process in memory
    PLANET_WEB_BASE_URL        the public URL the users see (the redirect URI is made from it)
    PLANET_WEB_SESSION_SECRET  signs the cookie that says which user a browser is
    PLANET_WEB_KEY_SECRET      makes storage keys an HMAC of the user ids (optional)
    PLANET_WEB_ENCRYPTION_KEYS the key ring that encrypts the stored sessions, as
                               "id=KEY,old-id=OLDKEY" (KEY: 32 bytes in URL-safe base64; the
                               first encrypts, all decrypt); without it, sessions are stored in
                               clear
    PLANET_WEB_REPLICA         this replica's name, shown on its pages
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from html import escape
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.middleware.sessions import SessionMiddleware

from planet_async import (
    PLANET_API_ORIGINS,
    AuthorizationCodeFlow,
    AuthorizationServer,
    ClientSecretBasic,
    EncryptedStorage,
    MemoryStorage,
    RedisStorage,
    Storage,
)
from planet_async.starlette import USER_KEY, PlanetWeb
from planet_async.web import SessionPool, WebLogin

ISSUER = os.environ.get("PLANET_WEB_ISSUER", "https://login.planet.com/")
CLIENT_ID = os.environ.get("PLANET_WEB_CLIENT_ID", "your-web-client-id")
CLIENT_SECRET = os.environ.get("PLANET_WEB_CLIENT_SECRET", "")
SCOPES = os.environ.get("PLANET_WEB_SCOPES", "openid planet offline_access").split()
DATA_URL = os.environ.get("PLANET_WEB_DATA_URL", "https://api.planet.com/data/v1/searches")
REDIS_URL = os.environ.get("PLANET_WEB_REDIS_URL")
BASE_URL = os.environ.get("PLANET_WEB_BASE_URL")
SESSION_SECRET = os.environ.get("PLANET_WEB_SESSION_SECRET", "")
KEY_SECRET = os.environ.get("PLANET_WEB_KEY_SECRET")
REPLICA = os.environ.get("PLANET_WEB_REPLICA", socket.gethostname())
ENCRYPTION_KEYS = [
    (kid, base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)))
    for kid, _, key in (
        pair.partition("=") for pair in os.environ.get("PLANET_WEB_ENCRYPTION_KEYS", "").split(",")
    )
    if kid
]

# Tokens go only to allowlisted origins: Planet's, or the one API this service is pointed at.
_api = "{0.scheme}://{0.netloc}".format(urlsplit(DATA_URL))
ALLOWED_ORIGINS = None if _api in PLANET_API_ORIGINS else [_api]

server = AuthorizationServer(ISSUER)
client = ClientSecretBasic(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
# One Redis for everything the replicas share: pending logins and the users' sessions, the
# sessions encrypted (a dump of Redis then holds no token).
shared = RedisStorage(REDIS_URL) if REDIS_URL else MemoryStorage()
sessions: Storage = EncryptedStorage(shared, ENCRYPTION_KEYS) if ENCRYPTION_KEYS else shared
pool = SessionPool(
    server,
    client,
    sessions,
    max_sessions=10_000,
    idle_after=900,
    key_secret=KEY_SECRET.encode() if KEY_SECRET else None,
    allowed_origins=ALLOWED_ORIGINS,
)
login = WebLogin(AuthorizationCodeFlow(server, client, scopes=SCOPES), shared)
web = PlanetWeb(login, pool, base_url=BASE_URL)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        if isinstance(shared, RedisStorage):
            await stack.enter_async_context(shared)  # one connection for this replica
        await stack.enter_async_context(pool)  # renews ahead, hears sign-outs, saves on exit
        stack.push_async_callback(web.aclose)
        yield


app = FastAPI(lifespan=lifespan)
# The browser's session cookie holds the user id only, signed; the tokens stay on the server.
app.add_middleware(
    SessionMiddleware,
    secret_key=SESSION_SECRET,
    same_site="lax",
    https_only=(BASE_URL or "").startswith("https://"),
)
web.install(app)
UserClient = Annotated[httpx.AsyncClient, Depends(web.client)]


@app.get("/", response_class=HTMLResponse)
async def home(request: Request) -> str:
    user = request.session.get(USER_KEY)  # who this browser is, if anyone
    if user is None:
        return f"<h1>{escape(REPLICA)}</h1><p><a href='/auth/login'>Log in with Planet</a></p>"
    return (
        f"<h1>{escape(REPLICA)}</h1><p>Logged in as <b id='user'>{escape(user)}</b>.</p>"
        "<p><a href='/data'>Your data</a></p>"
        "<form method='post' action='/auth/logout'><button id='logout'>Log out</button></form>"
    )


@app.get("/data")
async def data(request: Request, api: UserClient) -> dict[str, Any]:
    """The user's data, fetched from the API with the user's own token."""
    user = web.current_user(request)
    response = await api.get(DATA_URL.replace("{user}", quote(user, safe="")))
    return {
        "replica": REPLICA,
        "user": user,
        "status": response.status_code,
        "api": response.json(),
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"replica": REPLICA}
