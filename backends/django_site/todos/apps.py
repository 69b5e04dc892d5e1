from django.apps import AppConfig


class TodosConfig(AppConfig):
    name = "backends.django_site.todos"
    label = "todos"
    verbose_name = "Todos"
