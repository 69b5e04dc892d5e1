"""Validation of todo bodies and listing parameters, with DRF's exact messages.

The Django stack validates with DRF serializers; these functions reproduce
what those serializers answer (field order, message wording, which errors
are reported together) so both stacks refuse the same input the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from werkzeug.datastructures import MultiDict

from .errors import ValidationFailed

TITLE_MAX_LENGTH = 200
PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100
ORDERING_FIELDS = ("id", "title", "done", "created_at", "updated_at")
DONE_VALUES = {"true": True, "1": True, "false": False, "0": False}

# DRF's IntegerField accepts "3.0" and guards against huge strings.
_DECIMAL_TAIL = re.compile(r"\.0*\s*$")
_MAX_INTEGER_STRING = 1000


class Invalid(Exception):
    """One field's messages."""

    def __init__(self, *messages: str) -> None:
        super().__init__(*messages)
        self.messages = list(messages)


def _title(value) -> str:
    if value is None:
        raise Invalid("This field may not be null.")
    if isinstance(value, str) and not value.strip():
        raise Invalid("This field may not be blank.")
    if not isinstance(value, str):
        raise Invalid("Not a valid string.")
    title = value.strip()
    messages = []
    if len(title) > TITLE_MAX_LENGTH:
        messages.append(f"Ensure this field has no more than {TITLE_MAX_LENGTH} characters.")
    if "\x00" in title:
        messages.append("Null characters are not allowed.")
    surrogate = next((char for char in title if 0xD800 <= ord(char) <= 0xDFFF), None)
    if surrogate:
        messages.append(f"Surrogate characters are not allowed: U+{ord(surrogate):X}.")
    if messages:
        raise Invalid(*messages)
    return title


def _done(value) -> bool:
    if value is None:
        raise Invalid("This field may not be null.")
    if not isinstance(value, bool):
        raise Invalid("Must be a valid boolean.")
    return value


TODO_FIELDS = {"title": _title, "done": _done}


def validate_todo(data, *, partial: bool = False) -> dict:
    """The writable fields of a POST/PUT (``title`` required) or PATCH (``partial``) body."""
    if not isinstance(data, dict):
        message = f"Invalid data. Expected a dictionary, but got {type(data).__name__}."
        raise ValidationFailed({"non_field_errors": [message]})
    values, errors = {}, {}
    for name, check in TODO_FIELDS.items():
        if name not in data:
            if name == "title" and not partial:
                errors[name] = ["This field is required."]
            continue
        try:
            values[name] = check(data[name])
        except Invalid as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationFailed(errors)
    return values


@dataclass(frozen=True)
class Listing:
    done: bool | None = None
    ordering: tuple[str, ...] = ("id",)
    page: int = 1
    page_size: int = PAGE_SIZE_DEFAULT


def _done_filter(raw: str) -> bool:
    try:
        return DONE_VALUES[raw.lower()]
    except KeyError:
        raise Invalid("Must be one of: true, false, 1, 0.") from None


def _ordering(raw: str) -> tuple[str, ...]:
    terms = tuple(term.strip() for term in raw.split(",") if term.strip())
    for term in terms:
        name = term.removeprefix("-")
        if name not in ORDERING_FIELDS:
            raise Invalid(f'Unknown field "{name}".')
    return terms or Listing.ordering


def _integer(raw: str, max_value: int | None = None) -> int:
    if len(raw) > _MAX_INTEGER_STRING:
        raise Invalid("String value too large.")
    try:
        number = int(_DECIMAL_TAIL.sub("", raw))
    except ValueError:
        raise Invalid("A valid integer is required.") from None
    if number < 1:
        raise Invalid("Ensure this value is greater than or equal to 1.")
    if max_value is not None and number > max_value:
        raise Invalid(f"Ensure this value is less than or equal to {max_value}.")
    return number


LISTING_PARAMETERS = {
    "done": _done_filter,
    "ordering": _ordering,
    "page": _integer,
    "page_size": lambda raw: _integer(raw, PAGE_SIZE_MAX),
}


def validate_listing(args: MultiDict) -> Listing:
    """The ``GET /todos`` parameters; all bad ones are reported together.

    As with a DRF serializer over ``query_params``, a repeated parameter
    counts by its last value and an empty one counts as absent.
    """
    values, errors = {}, {}
    for name, convert in LISTING_PARAMETERS.items():
        raw = (args.getlist(name) or [""])[-1]
        if raw == "":
            continue
        try:
            values[name] = convert(raw)
        except Invalid as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationFailed(errors)
    return Listing(**values)
