from django.apps import AppConfig
from django.core.signals import setting_changed


class ApnsdConfig(AppConfig):
    name = "apnsd.django"
    label = "apnsd"
    verbose_name = "apnsd push notifications"
    default = True

    def ready(self):
        setting_changed.connect(_on_setting_changed, dispatch_uid="apnsd.django.reset")


def _on_setting_changed(setting, **kwargs):
    from apnsd.django import SETTING_NAMES, reset_client
    if setting in SETTING_NAMES:
        reset_client()
