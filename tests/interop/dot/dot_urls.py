"""URLs of the interoperability site: the OAuth endpoints and one protected view."""
from django.http import HttpResponse
from django.urls import include, path
from oauth2_provider.oauth2_backends import get_oauthlib_core


def hello(request):
    valid, _ = get_oauthlib_core().verify_request(request, scopes=["read"])
    return HttpResponse("ok\n" if valid else "invalid token\n", status=200 if valid else 401)


urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("api/hello", hello),
]
