"""URLs of the interoperability site: the OAuth endpoints, Django's login page, and one
protected view."""
from django.contrib.auth.views import LoginView
from django.http import HttpResponse
from django.urls import include, path
from oauth2_provider.oauth2_backends import get_oauthlib_core


def hello(request):
    valid, _ = get_oauthlib_core().verify_request(request, scopes=["read"])
    return HttpResponse("ok\n" if valid else "invalid token\n", status=200 if valid else 401)


urlpatterns = [
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", LoginView.as_view(template_name="login.html")),
    path("api/hello", hello),
]
