import json

from django.core.management.base import BaseCommand, CommandError

from apnsd import ApnsdError
from apnsd.django import send_push


class Command(BaseCommand):
    help = ("Send one push notification through apnsd and print Apple's verdict as JSON. "
            "Exits non-zero when the notification was not delivered (or queued, with --no-wait).")

    def add_arguments(self, parser):
        parser.add_argument("token", help="device token in hex; '<a1b2 c3d4 ...>' as logged by iOS is fine")
        parser.add_argument("--alert", help="alert text (payload.aps.alert)")
        parser.add_argument("--badge", type=int, help="badge number (payload.aps.badge)")
        parser.add_argument("--sound", help="sound name (payload.aps.sound)")
        parser.add_argument("--app", help="apnsd app name (default: settings.APNSD_APP)")
        parser.add_argument("--env", choices=["sandbox", "production"],
                            help="APNs environment (default: the app's)")
        parser.add_argument("--payload", help="full APNs payload as a JSON object")
        parser.add_argument("--topic")
        parser.add_argument("--push-type", dest="push_type")
        parser.add_argument("--priority", type=int)
        parser.add_argument("--expiration", type=int, help="UNIX seconds")
        parser.add_argument("--collapse-id", dest="collapse_id")
        parser.add_argument("--apns-id", dest="apns_id")
        parser.add_argument("--no-wait", dest="wait", action="store_false",
                            help="return as soon as apnsd queued it")

    def handle(self, *args, **options):
        payload = None
        if options.get("payload"):
            try:
                payload = json.loads(options["payload"])
            except ValueError as exc:
                raise CommandError("--payload is not valid JSON: %s" % exc)
            if not isinstance(payload, dict):
                raise CommandError("--payload must be a JSON object")
        kwargs = {"payload": payload, "wait": options["wait"]}
        for name in ("alert", "badge", "sound", "app", "env", "topic", "push_type",
                     "priority", "expiration", "collapse_id", "apns_id"):
            kwargs[name] = options.get(name)
        try:
            result = send_push(options["token"], **kwargs)
        except ApnsdError as exc:
            raise CommandError("apnsd: %s" % exc)
        self.stdout.write(json.dumps(result.to_dict(), sort_keys=True))
        if not result.ok:
            if result.error:
                what = "apnsd refused it: %s (%s)" % (result.error, result.message or "")
            else:
                what = "APNs refused it: %s %s" % (result.status, result.reason or "")
            if result.unregistered:
                what += "; the token is no longer valid, delete it"
            raise CommandError("not delivered: " + what.strip())
