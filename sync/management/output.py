"""Helpers shared by the sync management commands."""

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.management.base import CommandError
from django.utils.translation import gettext as _

from sync import services


def validation_message(error: ValidationError) -> str:
    """Flatten a ValidationError into one line an operator can act on."""
    if hasattr(error, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" if field != "__all__" else " ".join(messages)
            for field, messages in error.message_dict.items()
        )
    return " ".join(error.messages)


def add_user_argument(parser: ArgumentParser) -> None:
    """The --user option of the commands whose changes go into the admin History."""
    parser.add_argument(
        "--user",
        help="User name of the administrator doing this, named in the admin History "
        f"(default: the inactive user {services.COMMAND_USERNAME}).",
    )


def command_user(options: dict[str, Any]) -> Any:
    """The user named by --user, or the manage.py user; a CommandError if there is none."""
    try:
        return services.command_user_get(username=options["user"])
    except ObjectDoesNotExist:
        raise CommandError(
            _("No user %(name)r exists on this server.") % {"name": options["user"]}
        ) from None
