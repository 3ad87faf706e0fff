"""Helpers shared by the sync management commands."""

from django.core.exceptions import ValidationError


def validation_message(error: ValidationError) -> str:
    """Flatten a ValidationError into one line an operator can act on."""
    if hasattr(error, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" if field != "__all__" else " ".join(messages)
            for field, messages in error.message_dict.items()
        )
    return " ".join(error.messages)
