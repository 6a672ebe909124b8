"""The web server ``make run`` starts: nothing it creates is shared with another instance."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from gunicorn.config import Config  # type: ignore[import-untyped]

from portal.management.commands.run_embedded import web_command


def gunicorn_config(command: list[str]) -> Config:
    """gunicorn's settings for ``python -m gunicorn ...``, parsed by gunicorn itself."""
    assert command[1:3] == ["-m", "gunicorn"]
    config = Config()
    args = config.parser().parse_args(command[3:])
    for name, value in vars(args).items():
        if value is not None and name in config.settings:
            config.set(name, value)
    return config


def test_gunicorn_opens_no_control_socket_in_the_users_home():
    # gunicorn's default is ~/.gunicorn/gunicorn.ctl for every instance: a second
    # `make run` takes it over, and the first one's shutdown deletes it.
    config = gunicorn_config(web_command("127.0.0.1", 8000))
    assert config.control_socket_disable or Path(config.control_socket).is_relative_to(settings.VAR_DIR)


def test_the_parse_sees_gunicorns_default_without_the_flag():
    # The check above can fail: without the flag gunicorn would use its shared default.
    command = [arg for arg in web_command("127.0.0.1", 8000) if arg != "--no-control-socket"]
    config = gunicorn_config(command)
    assert not config.control_socket_disable
    assert not Path(config.control_socket).is_relative_to(settings.VAR_DIR)
