"""Old integer page URLs (``/data/versions/42/``): a redirect to the public-id URL, for the owner only.

Bookmarks and links in old e-mails still point at integer URLs. Following one
redirects (302) a signed-in member of the organisation that owns the object;
everyone else, signed in or not, gets the same 404 as for an id that does not
exist, so the old URLs do not become a way to count or probe objects.
"""

from __future__ import annotations

from collections.abc import Callable

from django.apps import apps
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET

from common.ids import parse_id
from common.models import Membership
from common.public_ids import PREFIXES


def legacy_redirect(prefix: str, *, owner: str, to: str, kwarg: str) -> Callable[..., HttpResponse]:
    """A view for one ``<int:…>`` argument: a redirect to ``to`` with ``kwarg`` = the public id.

    ``owner`` is the lookup from the model to the owning organisation's key
    (``"pk"`` for an organisation itself, ``"dataset__owner"`` for a version).
    """
    model = PREFIXES[prefix]

    @require_GET
    def view(request: HttpRequest, **kwargs: int) -> HttpResponse:
        (legacy_id,) = kwargs.values()
        user = request.user
        if not user.is_authenticated or parse_id(str(legacy_id)) is None:
            raise Http404("No such page.")
        manager = apps.get_model(model)._default_manager
        row = manager.filter(pk=legacy_id).values_list("public_id", owner).first()
        if row is None or not Membership.objects.filter(user=user, organisation_id=row[1]).exists():
            raise Http404("No such page.")
        return redirect(to, **{kwarg: row[0]})

    view.__name__ = view.__qualname__ = f"legacy_{prefix}_redirect"
    return view
