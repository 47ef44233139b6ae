"""Showing a device login to the user: a link and the code in a notebook, plain text elsewhere."""

from __future__ import annotations

import html
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flows._device_code import DeviceAuthorization

__all__ = ["device_login_html", "show_device_login"]


def _notebook_shell() -> Any:
    """The IPython kernel's shell when this runs in one (Jupyter, VS Code notebooks), else None.
    IPython is never imported here: a program that has not loaded it is not in a notebook."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return shell if getattr(shell, "kernel", None) is not None else None


def _qr_svg(url: str) -> str | None:
    try:
        import qrcode  # type: ignore[import-not-found,import-untyped,unused-ignore]
        import qrcode.image.svg  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    image = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    svg = image.to_string(encoding="unicode")
    return str(svg)


def device_login_html(pending: DeviceAuthorization) -> str:
    """The device login as HTML: the link (with the code in it, when the server gives one),
    the code, and a QR code of the link with the ``qr`` extra."""
    target = pending.verification_uri_complete or pending.verification_uri
    link = html.escape(target, quote=True)
    parts = [
        '<div class="planet-async-device-login">',
        f'<p>To log in, open <a href="{link}" target="_blank" rel="noopener">'
        f"{html.escape(pending.verification_uri)}</a> and enter the code "
        f'<code style="font-size:1.2em">{html.escape(pending.user_code)}</code></p>',
    ]
    svg = _qr_svg(target)
    if svg is not None:
        parts.append(f'<div style="width:12em">{svg}</div>')
    parts.append("</div>")
    return "".join(parts)


def show_device_login(pending: DeviceAuthorization) -> None:
    """Tell the user how to finish a device login: in a notebook, a clickable link and the code
    (and a QR code with the ``qr`` extra); elsewhere, printed text."""
    if _notebook_shell() is not None:
        from IPython.display import display  # type: ignore[import-not-found,unused-ignore]

        bundle = {"text/plain": pending.instructions(), "text/html": device_login_html(pending)}
        display(bundle, raw=True)  # type: ignore[no-untyped-call,unused-ignore]
        return
    print(pending.instructions(), flush=True)
