from django.db import migrations


def install(apps, schema_editor):
    from sync.capture import triggers_install

    triggers_install(schema_editor.connection.vendor, backfill=False)


class Migration(migrations.Migration):
    dependencies = [("sync", "0004_run_lock")]

    operations = [migrations.RunPython(install, migrations.RunPython.noop)]
