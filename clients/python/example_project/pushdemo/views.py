import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apnsd import ApnsdError, Timeout
from apnsd.django import send_push


@csrf_exempt
@require_POST
def push(request):
    """POST /push/ with ``token`` and ``alert`` (form fields or a JSON body).

    200 with the Result as JSON whenever apnsd gave a verdict -- look at
    "ok" (a refused notification is a verdict too); 400 on bad input;
    503 (504 on timeout) when apnsd could not be asked.
    """
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body.decode("utf-8") or "{}")
        except ValueError:
            return JsonResponse({"ok": False, "error": "bad_json"}, status=400)
        if not isinstance(data, dict):
            return JsonResponse({"ok": False, "error": "bad_json"}, status=400)
    else:
        data = request.POST
    token = data.get("token")
    alert = data.get("alert")
    if not token:
        return JsonResponse({"ok": False, "error": "missing_token",
                             "message": "token is required"}, status=400)
    try:
        result = send_push(token, alert=alert or None)
    except Timeout as exc:
        return JsonResponse({"ok": False, "error": "daemon_timeout", "message": str(exc)},
                            status=504)
    except ApnsdError as exc:
        return JsonResponse({"ok": False, "error": "daemon_unreachable", "message": str(exc)},
                            status=503)
    return JsonResponse(result.to_dict())
