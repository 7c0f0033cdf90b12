"""``msgin5g mqtt acl|token``: broker access rules and credentials (docs/mqtt.md).

``acl`` reads the provisioned UEs from the server's storage and prints (or
writes) the broker's access rules; ``token`` prints the password a UE presents
to the broker (its ``PSK_TOKEN`` credential), for ``mosquitto_passwd``.
"""

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from msgin5g.cli.common import add_storage, server_config
from msgin5g.errors import ConfigError

__all__ = ["add_mqtt_parser", "run_mqtt"]

_EXAMPLE = """\
examples:
  msgin5g mqtt acl --storage sqlite:///msgin5g.db -o /etc/mosquitto/msgin5g.acl
  msgin5g mqtt acl --format emqx -o /opt/emqx/etc/acl.conf
  mosquitto_passwd -b /etc/mosquitto/passwd dev1 "$(msgin5g mqtt token dev1 --secret S)"
"""


def add_mqtt_parser(commands: Any) -> None:
    """Add ``mqtt acl`` and ``mqtt token`` to the top-level sub-parsers."""
    mqtt = commands.add_parser(
        "mqtt",
        help="MQTT binding: broker ACL and UE broker passwords (docs/mqtt.md)",
        description="Broker-side set-up of the MQTT binding: the ACL that lets a "
        "UE publish only as itself and read only its own topic, and the password "
        "a UE presents to the broker.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = mqtt.add_subparsers(dest="mqtt_command", required=True, metavar="ACTION")
    acl = actions.add_parser(
        "acl",
        help="print the broker ACL for the provisioned UEs",
        description="Print the broker's access rules for every provisioned UE "
        "(Mosquitto acl_file or EMQX acl.conf). Run again after 'ue add' (or use "
        "--pattern, which needs no regeneration), then reload the broker "
        "(mosquitto: kill -HUP).",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_storage(acl)
    acl.add_argument(
        "--format", choices=("mosquitto", "emqx"), default="mosquitto",
        help="ACL syntax (default mosquitto)",
    )  # fmt: skip
    acl.add_argument(
        "--server-user", default="msgin5g-server", metavar="NAME",
        help="user name the server connects with (mqtt.username; default "
        "msgin5g-server)",
    )  # fmt: skip
    acl.add_argument(
        "--pattern", action="store_true",
        help="one rule for every user (%%u / ${username}) instead of one block per UE",
    )  # fmt: skip
    acl.add_argument("-o", "--output", metavar="FILE", help="write here, not stdout")
    acl.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    token = actions.add_parser(
        "token",
        help="print a UE's broker password (its PSK_TOKEN credential)",
        description="Print the PSK_TOKEN a UE derives from its secret: the "
        "password 'msgin5g ue … --server mqtt://…' presents to the broker.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("ue_service_id", metavar="ID")
    token.add_argument("--secret", required=True, help="the UE's provisioned secret")


async def run_mqtt(args: argparse.Namespace) -> int:
    """Run ``msgin5g mqtt …``; returns the exit status."""
    if args.mqtt_command == "token":
        from msgin5g.model.credentials import psk_token

        print(psk_token(args.secret, args.ue_service_id))
        return 0
    from msgin5g.server.admin import list_ues
    from msgin5g.server.mqtt_acl import render_acl

    config = server_config(args)
    ues = [ue for ue, _ in await list_ues(config.storage.url)]
    text, skipped = render_acl(
        ues,
        fmt=args.format,
        prefix=config.mqtt.topic_prefix,
        server_user=config.mqtt.username or args.server_user,
        pattern=args.pattern,
    )
    for ue in skipped:
        print(
            f"msgin5g: {ue!r} left out: not usable as an MQTT topic level",
            file=sys.stderr,
        )
    if args.output:
        try:
            await asyncio.to_thread(Path(args.output).write_text, text, "utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.output}: {exc.strerror}") from exc
        print(f"wrote {args.output}: rules for {len(ues) - len(skipped)} UEs")
    else:
        sys.stdout.write(text)
    return 0
