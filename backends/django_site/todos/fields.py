"""Serializer fields as strict as the contract, so both stacks refuse the same input."""

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A string field that refuses numbers instead of coercing them to text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """Only JSON ``true``/``false``, not ``"yes"``, ``1`` or ``"on"`` (``null`` stays DRF's "may not be null")."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data
