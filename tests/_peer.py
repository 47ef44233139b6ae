"""Run the oidc-provider test peer (tests/peer/server.mjs) from Python tests.

Stdlib only, apart from `make_client_keys`, which needs `cryptography`.
Run `npm ci` in tests/peer once before use.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PEER_DIR = Path(__file__).resolve().parent / "peer"
SERVER_SCRIPT = PEER_DIR / "server.mjs"
# loopback only: never route through an *_proxy from the environment
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Peer:
    """A running test peer. Create it with `Peer.start()`; always `stop()` it."""

    issuer: str
    port: int

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        issuer: str,
        port: int,
        log_path: Path,
        pump: threading.Thread,
    ) -> None:
        self._proc = proc
        self.issuer = issuer
        self.port = port
        self.log_path = log_path
        self._pump = pump
        self._final_log: str | None = None

    @classmethod
    def start(cls, *, env: dict[str, str] | None = None, timeout: float = 20.0) -> Peer:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not found on PATH")
        if not (PEER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"oidc-provider missing: run `npm ci` in {PEER_DIR}")

        tmpdir = Path(tempfile.mkdtemp(prefix="planet-peer-"))
        log_path = tmpdir / "peer.log"
        full_env = {**os.environ, **(env or {}), "PORT": "0"}
        log = open(log_path, "wb")  # noqa: SIM115 - the child and the copy thread share it
        try:
            proc = subprocess.Popen(
                [node, str(SERVER_SCRIPT)],
                cwd=PEER_DIR,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,  # straight to the file, never a pipe
            )
        except BaseException:
            log.close()
            raise

        # A thread reads stdout: the first line goes to the queue, the rest to the log.
        first: queue.Queue[bytes] = queue.Queue(maxsize=1)

        def pump() -> None:
            assert proc.stdout is not None
            with proc.stdout, log:
                first.put(proc.stdout.readline())
                for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                    log.write(chunk)
                    log.flush()

        pump_thread = threading.Thread(target=pump, name="peer-stdout", daemon=True)
        pump_thread.start()

        def fail(reason: str) -> RuntimeError:
            _terminate(proc)
            pump_thread.join(timeout=2)
            tail = _tail(log_path)
            shutil.rmtree(tmpdir, ignore_errors=True)
            return RuntimeError(f"test peer {reason}; log tail:\n{tail}")

        try:
            line = first.get(timeout=timeout)
        except queue.Empty:
            raise fail(f"did not become ready within {timeout} s") from None
        except BaseException:  # Ctrl-C while waiting: never leave node running
            _terminate(proc)
            raise
        if not line:
            proc.wait(timeout=5)
            raise fail(f"exited with code {proc.returncode} before becoming ready")
        try:
            ready = json.loads(line)
            return cls(proc, str(ready["issuer"]), int(ready["port"]), log_path, pump_thread)
        except (ValueError, KeyError, TypeError):
            raise fail(f"printed an unexpected first line {line!r}") from None

    # -- test-only endpoints ---------------------------------------------------------------

    def _get(self, path: str) -> Any:
        with _NO_PROXY.open(self.issuer + path, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict:
        """{"grant_success": {grant_type: n}, "grant_error": {"grant_type:error": n},
        "refreshed": {sub: [ms since the epoch of each refresh grant]}}"""
        return self._get("/__stats")

    def refreshed(self) -> dict[str, list[int]]:
        """When each user (`sub`) was given tokens by a refresh grant since the last reset, in
        the order granted: milliseconds since the epoch, the server's clock."""
        return {sub: [int(t) for t in times] for sub, times in self.stats()["refreshed"].items()}

    def grants(self, grant_type: str) -> int:
        """Successful grants of `grant_type` (e.g. "client_credentials") since the last reset."""
        return int(self.stats()["grant_success"].get(grant_type, 0))

    def introspections(self) -> int:
        """Requests to the introspection endpoint since the last reset."""
        return int(self.stats().get("introspections", 0))

    def errors(self) -> dict[str, int]:
        """Failed grants, keyed "grant_type:error" (e.g. "refresh_token:invalid_grant")."""
        return {k: int(v) for k, v in self.stats()["grant_error"].items()}

    def reset(self) -> None:
        """Zero the counters (tokens and grants already issued stay valid)."""
        self._get("/__reset")

    def set_token_delay(self, ms: int) -> None:
        """Delay every /token request by `ms` milliseconds from now on (0 = no delay)."""
        query = urllib.parse.urlencode({"token_delay_ms": int(ms)})
        self._get(f"/__config?{query}")

    def fail_next_token_requests(self, count: int) -> None:
        """Answer the next `count` /token requests with a 503 that never reaches the provider (a
        refresh token sent in one is not spent); `reset` clears what is left."""
        self._get(f"/__config?token_fail_next={int(count)}")

    def injected_failures(self) -> int:
        """/token requests answered 503 by `fail_next_token_requests` since the last reset."""
        return int(self.stats().get("injected_failures", 0))

    def set_access_token_ttl(self, seconds: int) -> None:
        """Access tokens issued from now on live `seconds` seconds."""
        self._get(f"/__config?at_ttl={int(seconds)}")

    def set_refresh_expires_in(self, seconds: int) -> None:
        """Token responses with a refresh token say it lasts `seconds` (0: they do not say)."""
        self._get(f"/__config?refresh_expires_in={int(seconds)}")

    def config(self) -> dict:
        return self._get("/__config")

    def log(self) -> str:
        """Everything the peer wrote to stderr, and to stdout after its ready line."""
        if self._final_log is not None:
            return self._final_log
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, up to 5 s grace, then SIGKILL. Deletes the temp dir; log() still works."""
        _terminate(self._proc)
        if self._final_log is None:
            self._pump.join(timeout=2)
            self._final_log = self.log_path.read_text(errors="replace")
            shutil.rmtree(self.log_path.parent, ignore_errors=True)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return "<no log>"


def make_client_keys(directory: Path) -> tuple[Path, dict]:
    """Write rsa.pem, ec.pem (private keys) and jwks.json (their public JWKs) into `directory`.

    Returns (jwks_path, {"rsa-1": rsa_pem_path, "ec-1": ec_pem_path}); the dict keys are the
    kids in the JWKS (alg RS256 and ES256 respectively). Pass jwks_path as PKJWT_JWKS.
    """
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def b64(n: int, size: int | None = None) -> str:
        raw = n.to_bytes(size or (n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())

    pems = {"rsa-1": directory / "rsa.pem", "ec-1": directory / "ec.pem"}
    for kid, key in (("rsa-1", rsa_key), ("ec-1", ec_key)):
        pems[kid].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    rpub = rsa_key.public_key().public_numbers()
    epub = ec_key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": "rsa-1",
                "alg": "RS256",
                "use": "sig",
                "n": b64(rpub.n),
                "e": b64(rpub.e),
            },
            {
                "kty": "EC",
                "kid": "ec-1",
                "alg": "ES256",
                "use": "sig",
                "crv": "P-256",
                "x": b64(epub.x, 32),
                "y": b64(epub.y, 32),
            },
        ]
    }
    jwks_path = directory / "jwks.json"
    jwks_path.write_text(json.dumps(jwks, indent=2))
    return jwks_path, pems
