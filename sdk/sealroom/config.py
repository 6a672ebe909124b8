"""Where the token and the server's URL come from: arguments, then the environment, then ``sealroom login``.

Like ``huggingface_hub``: ``SEALROOM_TOKEN`` and ``SEALROOM_URL`` win over the
file that ``sealroom login`` writes (``$SEALROOM_HOME/config.json``, by default
``~/.config/sealroom/config.json``, mode 0600).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def home() -> Path:
    explicit = os.environ.get("SEALROOM_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sealroom"


def config_path() -> Path:
    return home() / "config.json"


def stored() -> dict[str, Any]:
    """What ``sealroom login`` saved ({} when nothing was, or the file is unreadable)."""
    try:
        data = json.loads(config_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def store(*, token: str, base_url: str) -> Path:
    """Save the token and URL for later commands (owner-only file)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"token": token, "url": base_url}, out)
    os.replace(tmp, path)
    return path


def forget() -> bool:
    """Remove the saved token; whether there was one."""
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


def resolve_token(token: str | None) -> str | None:
    return token or os.environ.get("SEALROOM_TOKEN") or stored().get("token") or None


def resolve_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("SEALROOM_URL") or stored().get("url") or DEFAULT_URL
    return str(url).rstrip("/")


def cache_dir() -> Path:
    """Resume records of uploads (``uploads/``)."""
    explicit = os.environ.get("SEALROOM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sealroom"
