from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [('vision', '0001_initial')]
    operations = [
        migrations.AddField('job', 'name', models.CharField(
            default='', max_length=40)),
        migrations.AddField('job', 'error_class', models.CharField(
            max_length=200, null=True)),
        migrations.AddField('job', 'user_error', models.BooleanField(
            default=False)),
        migrations.AddField('job', 'features_reset', models.BooleanField(
            default=False)),
        migrations.CreateModel(
            name='ErrorLog',
            fields=[
                ('id', models.AutoField(primary_key=True, serialize=False)),
                ('kind', models.CharField(max_length=200)),
                ('info', models.TextField()),
                ('path', models.CharField(max_length=200)),
            ],
        ),
    ]
