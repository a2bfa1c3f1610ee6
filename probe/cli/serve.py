"""`smtp-probe serve`: the Prometheus exporter, on 127.0.0.1:9125 unless told otherwise."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import click

from probe import aio
from probe.catalog import locale
from probe.cli.common import echo, fail, lang_option, refuse, resolve_lang
from probe.cli.helptext import Command
from probe.messages import msg, say
from probe.serveconf import DEFAULT_LISTEN, ConfigError, ServeConfig, parse_config
from probe.target import TargetError, parse_int


def listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT, HOST an IP address; bad values end the command (status 64)."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        refuse("usage.listen_form", value=repr(value), example=DEFAULT_LISTEN)
    try:
        number = parse_int(port, 0, 65535) if sep else -1
    except TargetError:
        number = -1
    if number < 0:
        refuse("usage.listen_port", value=repr(value))
    return host, number


def load_config(path: str | None) -> ServeConfig:
    if path is None:
        return ServeConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        from probe.cli.usage import os_reason

        reason = os_reason(e) if isinstance(e, OSError) else str(e)
        refuse("usage.config", path=path, detail=reason)
    try:
        return parse_config(text)
    except ConfigError as e:
        from probe.messages import carried, msg

        fail(msg("usage.in_file", path=path, detail=carried(e)), hint=False)


async def _serve(config: ServeConfig, host: str, port: int, lang: str) -> None:
    from probe.serve.app import Exporter, start

    runner = await start(Exporter(config, lang), host, port)
    where = f"http://{host}:{port}/"
    echo(say(locale(lang), msg("serve.ready", url=where)))
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


@click.command(name="serve", cls=Command)
@click.option("--listen", help=f"Address to listen on, IP:PORT (default {DEFAULT_LISTEN}).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Module and safety configuration (TOML); see README.",
)
@click.option("--check-config", is_flag=True, help="Check the configuration and exit.")
@lang_option
def serve(
    listen: str | None, config_path: str | None, check_config: bool, lang: str | None
) -> None:
    """Run the Prometheus exporter: /probe?target=DOMAIN&module=NAME, /metrics, /."""
    config = load_config(config_path)
    host, port = listen_address(listen or config.listen)
    chosen = resolve_lang(lang)
    if check_config:
        echo(say(locale(chosen), msg("serve.config_ok", modules=len(config.modules))))
        return
    aio.run(_serve(config, host, port, chosen))
