from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from common.models import Notification


def sealroom(request: HttpRequest) -> dict[str, Any]:
    """The current organisation (from the session) and the user's organisations."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"current_org": None, "my_memberships": []}
    memberships = list(user.memberships.select_related("organisation").order_by("organisation__name"))
    current_id = request.session.get("org_id")
    current = next((m for m in memberships if m.organisation_id == current_id), None)
    if current is None and memberships:
        current = memberships[0]
    return {
        "current_org": current.organisation if current else None,
        "current_role": current.role if current else None,
        "my_memberships": memberships,
        "unread_notifications": (
            Notification.objects.filter(organisation_id=current.organisation_id, read_at__isnull=True).count()
            if current
            else 0
        ),
    }
