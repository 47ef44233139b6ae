"""`planet-async`: log in, inspect and log out, with the same session choice as the library."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import json
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from .. import __version__
from .._auth import PlanetAuth, auth_from_source
from .._errors import ConfigurationError, LoginTimeout, PlanetAuthError
from .._extras import install_command
from .._session import SessionSource
from .._urls import require_secure_url
from ..flows._device_code import DeviceAuthorization
from ..profiles import AuthClientConfig, PlanetHome, choose_session
from ..profiles._clients import PLANET_M2M_ISSUER, PLANET_USER_ISSUER
from ..profiles._files import STORAGE_FILE, normalize_profile_name
from ..profiles._sessions import DEFAULT_PROFILE, did_you_mean
from ..storage._atomic import write_atomic
from ..storage._config import STORAGE_VARIABLE, storage_from_url
from ..storage._protocol import Storage
from ..storage._url import without_password

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SHELLS = ("bash", "zsh", "fish")
API_KEY_PROFILE = "planet-apikey"


class _Fail(Exception):
    """A user-facing failure: one line on stderr (a JSON object on stdout with ``--json``) and
    an exit code, never a traceback. `hint` says what to do about it."""

    def __init__(self, message: str, code: int = EXIT_FAILED, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint


def _options(defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command (`--profile x auth status` or the reverse)."""
    parser = argparse.ArgumentParser(add_help=False)
    unset: Any = None if defaults else argparse.SUPPRESS
    parser.add_argument(
        "--profile", default=unset, help="the profile to use (default: as the library chooses)"
    )
    parser.add_argument(
        "--home", default=unset, help="the directory holding .planet/ (default: your home)"
    )
    parser.add_argument(
        "--storage",
        default=unset,
        metavar="URL",
        help="keep token sets here instead of ~/.planet: redis://host:port/db, rediss://..., "
        "file:///dir (default: $PLANET_ASYNC_STORAGE, else the store the profile was logged "
        "in to)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="machine-readable output",
    )
    parser.add_argument(
        "--allow-loopback-http",
        action="store_true",
        default=False if defaults else argparse.SUPPRESS,
        help="allow an http:// authorization server on 127.0.0.1 (testing)",
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planet-async",
        description="Log in to Planet, inspect the session and log out. Sessions are shared "
        "with the `planet` CLI (~/.planet.json, ~/.planet/<profile>/).",
        parents=[_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"planet-async {__version__}")
    parser.set_defaults(usage=parser)
    common = [_options(defaults=False)]
    commands = parser.add_subparsers(dest="group", title="commands")

    auth = commands.add_parser("auth", help="log in, status, tokens, log out")
    auth.set_defaults(usage=auth)
    auth_commands = auth.add_subparsers(dest="command", title="commands")
    login = auth_commands.add_parser("login", help="log in and save the session", parents=common)
    how = login.add_mutually_exclusive_group()
    how.add_argument("--browser", action="store_true", help="user login in a local browser")
    how.add_argument("--device", action="store_true", help="user login with a code (default)")
    how.add_argument(
        "--api-key",
        metavar="-",
        help="save a Planet API key: '--api-key -' reads it from stdin (a prompt without echo on "
        "a terminal); a key typed inline stays in your shell history and shows in `ps`",
    )
    login.add_argument("--client-id", help="an M2M client id (with a secret), or a user client")
    login.add_argument(
        "--client-secret", help="the M2M secret (default: $PL_AUTH_CLIENT_SECRET, or a prompt)"
    )
    login.add_argument("--issuer", help="the authorization server (default: Planet's)")
    login.add_argument("--scope", action="append", help="a scope to request (repeatable)")
    login.add_argument("--redirect-uri", help="registered loopback redirect URI (browser)")
    login.add_argument("--no-open", action="store_true", help="print the URL, do not open it")
    login.add_argument("--qr", action="store_true", help="show a QR code for the device login")
    login.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for you")
    use_it = login.add_mutually_exclusive_group()
    use_it.add_argument(
        "--use", action="store_true", help="make the profile the one in use (the default)"
    )
    use_it.add_argument(
        "--no-use", action="store_true", help="save the session, but keep the profile in use"
    )
    for name, text in (
        ("status", "which session, where from, and its expiry"),
        ("print-access-token", "print a valid access token"),
        ("refresh", "renew the access token now"),
        ("logout", "revoke and delete the session"),
    ):
        auth_commands.add_parser(name, help=text, parents=common)
    move = auth_commands.add_parser(
        "move-to",
        help="move the session's tokens into another storage (a fleet's Redis)",
        parents=common,
    )
    move.add_argument("destination", metavar="URL", help="redis://..., rediss://... or file:///dir")
    move.add_argument(
        "--keep",
        action="store_true",
        help="keep the tokens here too (safe for M2M; a user session with rotating refresh "
        "tokens would die once both places renew)",
    )

    profile = commands.add_parser("profile", help="list, show and choose profiles")
    profile.set_defaults(usage=profile)
    profile_commands = profile.add_subparsers(dest="command", title="commands")
    profile_commands.add_parser("list", help="list profiles", parents=common)
    show = profile_commands.add_parser(
        "show", help="show a profile's settings (secrets masked)", parents=common
    )
    show.add_argument("name", nargs="?")
    use = profile_commands.add_parser("use", help="make a profile the default", parents=common)
    use.add_argument("name")

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script for a shell. Load it with, for bash: "
        'eval "$(planet-async completion bash)" in ~/.bashrc; zsh: the same in ~/.zshrc; fish: '
        "planet-async completion fish > ~/.config/fish/completions/planet-async.fish",
    )
    completion.add_argument("shell", choices=SHELLS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 1 failed, 2 bad usage or settings)."""
    parser = _parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions, and exits here
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.group == "completion":
        print(_completion_script(args.shell), end="")
        return EXIT_OK
    if args.group is None or args.command is None:
        args.usage.print_help()
        return EXIT_OK
    _show_warnings()
    try:
        result = anyio.run(_run, args)
    except _Fail as exc:
        return _error(args, str(exc), exc.code, exc.hint)
    except ConfigurationError as exc:
        return _error(args, str(exc), EXIT_USAGE)
    except PlanetAuthError as exc:
        return _error(args, str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _error(args, "interrupted", 130)
    _output(args, result)
    return EXIT_OK


def _completion_script(shell: str) -> str:
    from argcomplete.shell_integration import shellcode

    script: str = shellcode(["planet-async"], shell=shell)
    return script


def _show_warnings() -> None:
    """Warnings (a corrupt file moved aside) go to stderr; a failed renewal is left to the
    one-line error that follows it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("planet-async: warning: %(message)s"))
    handler.addFilter(lambda record: not record.name.startswith("planet_async._manager"))
    library = logging.getLogger("planet_async")
    library.addHandler(handler)
    library.setLevel(logging.WARNING)
    library.propagate = False


def _error(args: argparse.Namespace, message: str, code: int, hint: str | None = None) -> int:
    """One line on stderr; with ``--json``, ``{"error": ..., "hint": ...}`` on stdout instead."""
    message = " ".join(message.split())
    if args.json:
        print(json.dumps({"error": message, "hint": hint}, indent=2, sort_keys=True))
    else:
        line = f"{message}: {hint}" if hint else message
        print(f"planet-async: error: {line}", file=sys.stderr)
    return code


def _output(args: argparse.Namespace, result: dict[str, Any]) -> None:
    text = result.pop("_text", None)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    if text is not None:
        print(text)
        return
    for key, value in result.items():
        if value is not None:
            print(f"{key}: {value}")


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    home = PlanetHome(args.home)
    if args.group == "profile":
        return await anyio.to_thread.run_sync(_profile_command, args, home)
    if args.command == "login":
        return await _login(args, home)
    if args.command == "logout":
        return await _logout(args, home)
    auth = await _chosen_auth(args, home, check_server=args.command not in ("status", "move-to"))
    if args.command == "status":
        return await _status(args, auth)
    if args.command == "move-to":
        return await _move_to(args, auth)
    if auth.manager is None:
        raise _Fail(
            "this session uses an API key, which is not an access token and never expires",
            hint="use it as it is (`Authorization: api-key <key>`)",
        )
    if auth.user is not None and not await auth.manager.is_initialized():
        raise _not_logged_in(args, auth.source)
    if args.command == "print-access-token":
        token = await auth.manager.token()
        value = token.access_token.get_secret_value()
        return {"access_token": value, "_text": value}
    token = await auth.manager.renew()
    return {"refreshed": True, "expires_at": token.expires_at, "_text": "refreshed"}


def _not_logged_in(args: argparse.Namespace, source: SessionSource | None) -> _Fail:
    """ "not logged in", and the command that logs in to that very session."""
    command, which = "planet-async auth login", ""
    if source is not None and source.profile:
        which = f" (profile {source.profile!r}, from {source.origin})"
        if source.origin == "argument":
            command = f"planet-async --profile {source.profile} auth login"
    return _Fail("not logged in", hint=f"run `{command}`{which}")


async def _logout(args: argparse.Namespace, home: PlanetHome) -> dict[str, Any]:
    """Forget the chosen session's credential, whatever its kind; doing it twice is no error.

    Exit code 0 unless something fails. The line says what still supplies a credential (an
    environment variable, ``~/.planet.json``), and the profile logged out of is no longer the
    one ``~/.planet.json`` names.
    """
    source = await anyio.to_thread.run_sync(lambda: choose_session(profile=args.profile, home=home))
    config = None
    if source.kind == "profile" and source.profile:
        config = await anyio.to_thread.run_sync(home.read_auth_client, source.profile)
    revoked = False
    if source.kind == "api_key":
        forgot = False  # the key lives in a variable or ~/.planet.json, which we do not edit
    elif config is not None and config.kind in ("api_key", "legacy"):
        assert source.profile is not None
        forgot = await anyio.to_thread.run_sync(_forget_api_key, home, source.profile, config)
    else:
        auth = _auth_of(args, home, source, config)
        assert auth.manager is not None
        forgot = await auth.manager.storage.load(auth.manager.session) is not None
        revoked = await auth.logout()
    notes = await anyio.to_thread.run_sync(_after_logout, home, source)
    if source.kind == "profile" and source.profile:
        note = await anyio.to_thread.run_sync(_forget_storage, args, home, source.profile, forgot)
        if note:
            notes.append(note)
    if source.kind == "profile":
        what = f"profile {source.profile!r}"
    elif source.kind == "client_credentials":
        what = f"M2M client {source.client_id!r}"
    else:
        what = "the API key"
    text = f"logged out of {what}" if forgot else f"not logged in to {what}; nothing to forget"
    if revoked:
        text += " (refresh token revoked)"
    text = "; ".join((text, *notes))
    return {
        "logged_out": True,
        "forgot": forgot,
        "revoked": revoked,
        "profile": source.profile,
        "notes": notes,
        "_text": text,
    }


def _forget_api_key(home: PlanetHome, profile: str, config: AuthClientConfig) -> bool:
    """Delete a key profile's saved key (token.json, and a key written into its
    auth_client.json); returns whether there was one."""
    forgot = home.delete_token_file(profile)
    if config.api_key is not None:
        home.write_auth_client(profile, config.model_copy(update={"api_key": None}))
        forgot = True
    return forgot


def _forget_storage(
    args: argparse.Namespace, home: PlanetHome, profile: str, forgot: bool
) -> str | None:
    """After a logout, stop remembering where the profile's session was stored, unless the
    session was not found because this logout looked elsewhere: then say where to look."""
    remembered = home.remembered_storage(profile)
    if remembered is None:
        return None
    url, _ = remembered
    given = _storage_url(args)
    if forgot or given is None or without_password(given)[0] == url:
        home.remember_storage(profile, None)
        return None
    return f"its session was logged in to {url}: log out with `--storage` naming it"


def _after_logout(home: PlanetHome, source: SessionSource) -> list[str]:
    """Stop ``~/.planet.json`` naming the profile logged out of, and say what still supplies
    a credential."""
    notes: list[str] = []
    if source.kind == "profile" and source.profile:
        data = home.read_config()
        named = data.get("PL_AUTH_PROFILE")
        if isinstance(named, str) and named.strip().lower() == source.profile:
            del data["PL_AUTH_PROFILE"]
            if data:
                home.write_config(data)
            else:
                home.config_file.unlink()
            notes.append(f"{home.config_file} no longer names it")
        if source.origin.startswith("environment variable"):
            notes.append(f"{source.origin} still names it")
    elif source.origin.startswith("environment variable"):
        notes.append(f"{source.origin} is still set and supplies a credential: unset it")
    elif source.origin != "argument":
        notes.append(f"{source.origin} still holds a credential: remove it there")
    return notes


async def _chosen_auth(
    args: argparse.Namespace,
    home: PlanetHome,
    *,
    check_server: bool = True,
    profile: str | None = None,
) -> PlanetAuth:
    chosen = profile or args.profile
    source = await anyio.to_thread.run_sync(lambda: choose_session(profile=chosen, home=home))
    config = None
    if check_server and source.kind == "profile" and source.profile:
        config = await anyio.to_thread.run_sync(home.read_auth_client, source.profile)
    return _auth_of(args, home, source, config)


def _auth_of(
    args: argparse.Namespace,
    home: PlanetHome,
    source: SessionSource,
    config: AuthClientConfig | None,
) -> PlanetAuth:
    """The session `source` names; its profile's client `config`, if given, is checked first."""
    if config is not None:
        _check_server(config, args.allow_loopback_http)
    return auth_from_source(
        source,
        home=home,
        storage=_storage(args, home, source),
        allow_loopback_http=args.allow_loopback_http,
    )


def _storage(
    args: argparse.Namespace, home: PlanetHome | None = None, source: SessionSource | None = None
) -> Storage | None:
    """The storage `--storage` names; else, unless ``PLANET_ASYNC_STORAGE`` is set, the one the
    profile's session was logged in to (remembered beside it without its password); None leaves
    the choice to the library (the environment's variable, else the CLI's files).

    Raises:
        _Fail: The remembered storage needs a password, which is not kept on disk.
    """
    if args.storage:
        return storage_from_url(args.storage)
    if os.environ.get(STORAGE_VARIABLE, "").strip() or home is None or source is None:
        return None
    if source.kind != "profile" or not source.profile:
        return None
    remembered = home.remembered_storage(source.profile)
    if remembered is None:
        return None
    url, password = remembered
    if password:
        where = home.profile_dir(source.profile) / STORAGE_FILE
        raise _Fail(
            f"profile {source.profile!r} keeps its session in {url} (remembered in {where}), "
            "whose password is not kept on disk",
            hint=f"give the URL with its password: `--storage URL` or ${STORAGE_VARIABLE}",
        )
    return storage_from_url(url)


def _storage_url(args: argparse.Namespace) -> str | None:
    """The storage URL this command was given (`--storage`, else the environment), if any."""
    return args.storage or os.environ.get(STORAGE_VARIABLE, "").strip() or None


async def _move_to(args: argparse.Namespace, auth: PlanetAuth) -> dict[str, Any]:
    """Copy the session's stored tokens into another storage, then (unless --keep) delete them
    here: two places renewing one rotating refresh token would end the session."""
    if auth.manager is None:
        raise _Fail("an API key has no tokens to move; set the key where the fleet runs instead")
    manager = auth.manager
    destination = storage_from_url(args.destination)
    if repr(destination) == repr(manager.storage):
        # Copying a session onto itself and then deleting "the local copy" would delete it.
        raise _Fail(
            f"no session to move: session {manager.session!r} is already in {manager.storage!r}"
        )
    token = await manager.storage.load(manager.session)
    if token is None:
        raise _Fail(
            f"no session to move: run `planet-async auth login` first ({manager.storage!r})"
        )
    async with destination.lock(manager.session):
        await destination.save(manager.session, token)
    if not args.keep:
        async with manager.storage.lock(manager.session):
            await manager.storage.delete(manager.session)
    source = auth.source
    if source is not None and source.kind == "profile" and source.profile:
        home = PlanetHome(args.home)
        await anyio.to_thread.run_sync(home.remember_storage, source.profile, args.destination)
    where = getattr(destination, "url", None) or repr(destination)
    text = f"moved session {manager.session!r} to {where}" + (
        " (kept here too)" if args.keep else ""
    )
    return {"moved": True, "session": manager.session, "to": where, "_text": text}


def _check_server(config: AuthClientConfig, allow_loopback_http: bool) -> None:
    """Secrets and codes go to an https server only; http only on loopback, and only if asked."""
    for url in (config.server_url, *config.endpoints().values()):
        if not url:
            continue
        try:
            require_secure_url(url, loopback_http=allow_loopback_http)
        except ConfigurationError:
            http = urllib.parse.urlsplit(url).scheme == "http"
            hint = " (--allow-loopback-http allows http on loopback)" if http else ""
            raise _Fail(
                f"refusing authorization server {url}: it is not https{hint}", EXIT_USAGE
            ) from None


async def _status(args: argparse.Namespace, auth: PlanetAuth) -> dict[str, Any]:
    source = auth.source
    result: dict[str, Any] = {
        "profile": source.profile if source else None,
        "source": source.origin if source else None,
    }
    if auth.manager is None:
        result.update(kind="api_key", logged_in=True)
        return result
    result["kind"] = "user" if auth.user is not None else "m2m"
    storage = auth.manager.storage
    result["storage"] = getattr(storage, "url", None) or repr(storage)
    stored = await storage.load(auth.manager.session)
    if stored is None:
        result.update(logged_in=False)
        if auth.user is not None:
            raise _not_logged_in(args, source)
        return result
    now = time.time()
    result.update(
        logged_in=True,
        expires_at=stored.expires_at,
        expires_in=None if stored.expires_at is None else round(stored.expires_at - now),
        has_refresh_token=stored.refresh_token is not None,
        scope=stored.scope,
    )
    # For people, one line in local time in place of the epoch number and the seconds (which
    # --json keeps, for programs).
    lines = [
        f"expires: {_expiry_text(value, now)}" if key == "expires_at" else f"{key}: {value}"
        for key, value in result.items()
        if key != "expires_in" and (value is not None or key == "expires_at")
    ]
    return {**result, "_text": "\n".join(lines)}


def _expiry_text(expires_at: float | None, now: float) -> str:
    """When a token expires, in local time, and how long that is from `now`:
    ``2026-12-06 14:03:11 CET (in 52 min)``, or ``... (expired 3 min ago)``."""
    if expires_at is None:
        return "unknown (the server gave no lifetime; the token is used until the API refuses it)"
    stamp = (
        datetime.datetime.fromtimestamp(expires_at).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    )
    left = expires_at - now
    when = f"in {_duration(left)}" if left >= 0 else f"expired {_duration(-left)} ago"
    return f"{stamp.strip()} ({when})"


def _duration(seconds: float) -> str:
    """`seconds` as people say it: ``42 s``, ``52 min``, ``3 h 5 min``, ``2 days``."""
    if seconds < 90:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{round(seconds / 86400)} days"


async def _login(args: argparse.Namespace, home: PlanetHome) -> dict[str, Any]:
    if args.api_key is not None:
        key = _read_api_key(args.api_key)
        name = normalize_profile_name(args.profile or API_KEY_PROFILE)
        await anyio.to_thread.run_sync(_save_api_key, home, name, key)
        return await _logged_in(args, home, name, "api_key")
    secret = args.client_secret or os.environ.get("PL_AUTH_CLIENT_SECRET")
    if args.client_id and (secret or not (args.device or args.browser or args.issuer)):
        if not secret:
            secret = getpass.getpass("Client secret: ") if sys.stdin.isatty() else ""
        if not secret:
            raise _Fail("an M2M login needs --client-secret or $PL_AUTH_CLIENT_SECRET", EXIT_USAGE)
        name = args.profile or args.client_id
        config = AuthClientConfig.m2m(
            args.client_id,
            secret,
            auth_server=args.issuer or PLANET_M2M_ISSUER,
            scopes=args.scope or [],
        )
        async with _undone_on_failure(home, name):
            auth = await _save_client(args, home, name, config)
            assert auth.manager is not None
            await auth.manager.renew()  # proves the credentials work, and saves the token
        return await _logged_in(args, home, name, "m2m")
    if args.client_id:
        name = args.profile or args.client_id
        config = AuthClientConfig.user(
            args.client_id,
            auth_server=args.issuer or PLANET_USER_ISSUER,
            scopes=args.scope,
            redirect_uri=args.redirect_uri,
        )
        async with _undone_on_failure(home, name):
            auth = await _save_client(args, home, name, config)
            await _user_login(args, auth)
        return await _logged_in(args, home, name, "user")
    name = await anyio.to_thread.run_sync(_user_profile_to_log_in, args, home)
    async with _undone_on_failure(home, name, writes_profile=False):
        auth = await _chosen_auth(args, home, profile=name)
        await _user_login(args, auth)
    return await _logged_in(args, home, name, "user")


def _user_profile_to_log_in(args: argparse.Namespace, home: PlanetHome) -> str:
    """The profile a plain `auth login` logs in to: the one in use if it is a user profile,
    else the built-in user profile (a key or an M2M client in use is no reason to refuse)."""
    source = choose_session(profile=args.profile, home=home)
    if source.kind == "profile" and source.profile:
        config = home.read_auth_client(source.profile)
        if config is not None and config.kind == "user":
            return source.profile
        if source.origin == "argument":
            kind = config.kind if config is not None else "unknown"
            raise _Fail(
                f"profile {source.profile!r} is not a user profile ({kind})",
                EXIT_USAGE,
                hint="leave out --profile to log in to the user profile "
                f"{DEFAULT_PROFILE!r}, add `--api-key -` to replace a key, or --client-id and "
                "--client-secret for an M2M client",
            )
    return DEFAULT_PROFILE


def _read_api_key(given: str) -> str:
    """The key from stdin for ``-`` (a prompt without echo on a terminal); a key typed inline
    works, with a warning, since the shell's history and `ps` keep it."""
    if given == "-":
        key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    else:
        print(
            "planet-async: warning: an API key on the command line stays in your shell history "
            "and shows in `ps`; use `--api-key -` and type or pipe the key in",
            file=sys.stderr,
        )
        key = given
    key = key.strip()
    if not key:
        raise _Fail("no API key given", EXIT_USAGE, hint="pipe it in: `--api-key - < key.txt`")
    return key


@asynccontextmanager
async def _undone_on_failure(
    home: PlanetHome, name: str, *, writes_profile: bool = True
) -> AsyncIterator[None]:
    """A login that fails leaves the files as they were: a profile it wrote removed, or restored
    if there was one, and no directory it created (not even an empty ``~/.planet``).

    `writes_profile` False: the login writes no client configuration (a built-in profile), so
    only the directories it created are removed; nothing that was there is touched.
    """
    path = home.profile_dir(name) / "auth_client.json"
    directories = (home.home, home.profiles_dir, home.profile_dir(name))

    def before() -> tuple[bytes | None, list[Path]]:
        config = path.read_bytes() if path.is_file() else None
        return config, [directory for directory in directories if not directory.exists()]

    config, missing = await anyio.to_thread.run_sync(before)
    try:
        yield
    except (PlanetAuthError, _Fail):
        await anyio.to_thread.run_sync(_undo_login, home, name, writes_profile, config, missing)
        raise


def _undo_login(
    home: PlanetHome, name: str, writes_profile: bool, config: bytes | None, missing: list[Path]
) -> None:
    if writes_profile and config is None:
        home.delete_profile(name)
    elif writes_profile and config is not None:
        # Byte for byte: the old file need not even be valid JSON.
        write_atomic(home.profile_dir(name) / "auth_client.json", config)
    for directory in reversed(missing):  # innermost first
        with contextlib.suppress(OSError):  # not empty: something else was put there; keep it
            directory.rmdir()


async def _user_login(args: argparse.Namespace, auth: PlanetAuth) -> None:
    if args.browser:
        opener = (lambda url: False) if args.no_open else None
        await auth.login_with_browser(
            open_browser=opener, allow_tty_prompt=sys.stdin.isatty(), timeout=args.timeout
        )
        return
    try:
        with anyio.fail_after(args.timeout):
            await auth.login_with_device(show=lambda pending: _show_device_code(pending, args.qr))
    except TimeoutError:
        raise LoginTimeout(
            f"nobody confirmed the device code within {args.timeout:g} s (--timeout); start again"
        ) from None


async def _save_client(
    args: argparse.Namespace, home: PlanetHome, name: str, config: AuthClientConfig
) -> PlanetAuth:
    _check_server(config, args.allow_loopback_http)
    await anyio.to_thread.run_sync(home.write_auth_client, name, config)
    source = await anyio.to_thread.run_sync(lambda: choose_session(profile=name, home=home))
    return auth_from_source(
        source, home=home, storage=_storage(args), allow_loopback_http=args.allow_loopback_http
    )


def _save_api_key(home: PlanetHome, name: str, key: str) -> None:
    # The key goes in token.json only (which `planet` reads too when the client config has none),
    # so that `auth logout`, which deletes token.json, really forgets it.
    home.write_auth_client(
        name, AuthClientConfig(client_type="static_apikey", bearer_token_prefix="api-key")
    )
    home.write_token_file(name, {"api_key": key, "bearer_token_prefix": "api-key"})


async def _logged_in(
    args: argparse.Namespace, home: PlanetHome, name: str, kind: str
) -> dict[str, Any]:
    """Make the profile the one in use (unless --no-use), and say in one line what happened."""
    how = {"api_key": "with an API key", "m2m": "as an M2M client", "user": "as a user"}[kind]
    # Where the session was stored, so that a later command (logout) finds it without being told.
    url = None if kind == "api_key" else _storage_url(args)
    await anyio.to_thread.run_sync(home.remember_storage, name, url)
    if args.no_use:
        text = (
            f"logged in {how}: profile {name!r}; not made the one in use (--no-use), so give "
            f"`--profile {name}` or run `planet-async profile use {name}`"
        )
        return {"profile": name, "kind": kind, "in_use": False, "_text": text}
    await anyio.to_thread.run_sync(home.set_default_profile, name)
    text = f"logged in {how}: profile {name!r} is now in use"
    try:
        now = await anyio.to_thread.run_sync(lambda: choose_session(home=home))
    except ConfigurationError:
        # Half a setting in the environment (PL_AUTH_CLIENT_SECRET, given for this login):
        # the next command names it; the login itself is done.
        now = SessionSource(kind="profile", profile=name, origin=str(home.config_file))
    in_use = now.kind == "profile" and now.profile == name
    if not in_use:
        text += f", except while {now.origin} is set, which comes first"
    return {"profile": name, "kind": kind, "in_use": in_use, "_text": text}


def _show_device_code(pending: DeviceAuthorization, qr: bool) -> None:
    print(
        f"\n  Visit:  {pending.verification_uri}\n  Code:   {pending.user_code}\n", file=sys.stderr
    )
    if pending.verification_uri_complete:
        print(f"  Or open: {pending.verification_uri_complete}\n", file=sys.stderr)
        if qr:
            print(_qr_text(pending.verification_uri_complete), file=sys.stderr)
    sys.stderr.flush()


def _qr_text(url: str) -> str:
    try:
        import qrcode  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return f"  (a QR code needs the qr extra: {install_command('qr')})\n"
    code = qrcode.QRCode(border=2)
    code.add_data(url)
    lines: list[str] = []

    class _Sink:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            return None

    code.print_ascii(out=_Sink())
    return "".join(lines)


def _profile_command(args: argparse.Namespace, home: PlanetHome) -> dict[str, Any]:
    if args.command == "list":
        default = home.read_config().get("PL_AUTH_PROFILE")
        names = home.list_profiles()
        text = "\n".join(f"{'*' if n == default else ' '} {n}" for n in names)
        return {"profiles": names, "default": default, "_text": text}
    if args.command == "use":
        if home.read_auth_client(args.name) is None:
            raise _Fail(
                f"no profile {args.name!r}: {did_you_mean(home, args.name)}"
                "`planet-async profile list` shows them",
                EXIT_USAGE,
            )
        home.set_default_profile(args.name)
        return {"default": args.name.lower(), "_text": f"default profile: {args.name.lower()}"}
    name = args.name or choose_session(profile=args.profile, home=home).profile
    config = home.read_auth_client(name) if name else None
    if config is None:
        hint = did_you_mean(home, name) if name else ""
        raise _Fail(
            f"no profile {name!r}: {hint}`planet-async profile list` shows them", EXIT_USAGE
        )
    shown = config.model_dump(mode="json", exclude_none=True)  # secrets come out masked
    return {"profile": name, **shown}
