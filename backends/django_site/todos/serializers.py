from django.db import models
from rest_framework import serializers
from rest_framework.settings import api_settings

from .fields import StrictBooleanField, StrictCharField
from .models import Todo


class TodoSerializer(serializers.HyperlinkedModelSerializer):
    """A todo in the contract's key order, with strict string and boolean input."""

    serializer_field_mapping = {
        **serializers.HyperlinkedModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.BooleanField: StrictBooleanField,
    }

    class Meta:
        model = Todo
        fields = ["id", "url", "title", "done", "owner", "created_at", "updated_at"]
        read_only_fields = ["owner"]

    def validate_empty_values(self, data):
        """Refuse a JSON ``null`` body like any other non-object (DRF says "No data provided")."""
        if data is None:
            message = self.error_messages["invalid"].format(datatype=type(data).__name__)
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]}, code="invalid")
        return super().validate_empty_values(data)
