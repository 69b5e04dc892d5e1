"""The one table both stacks share; its migrations are the schema's source of truth."""

from django.db import models


class UpdatedAtField(models.DateTimeField):
    """``auto_now``, except that an insert stores ``created_at``'s very instant.

    Two ``auto_now*`` fields each read the clock, so a new row would show two
    timestamps microseconds apart; the Flask stack writes one. Migrations see
    a plain ``DateTimeField``.
    """

    def pre_save(self, model_instance, add):
        if add and model_instance.created_at is not None:
            setattr(model_instance, self.attname, model_instance.created_at)
            return model_instance.created_at
        return super().pre_save(model_instance, add)

    def deconstruct(self):
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.DateTimeField", args, kwargs


class Todo(models.Model):
    id = models.BigAutoField(primary_key=True)
    title = models.CharField(max_length=200)
    done = models.BooleanField(default=False)
    owner = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = UpdatedAtField(auto_now=True)

    class Meta:
        db_table = "todos"
        ordering = ["id"]
        indexes = [models.Index(fields=["owner", "id"], name="todos_owner_id_idx")]

    def __str__(self) -> str:
        return self.title
