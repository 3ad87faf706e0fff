from django.db import migrations


def install(apps, schema_editor):
    from sync.capture import triggers_install

    triggers_install(schema_editor.connection.vendor)


class Migration(migrations.Migration):
    dependencies = [
        ("stores", "0001_initial"),
        ("sync", "0002_sync_state"),
    ]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
