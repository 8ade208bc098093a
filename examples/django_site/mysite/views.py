from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods


class GreetForm(forms.Form):
    name = forms.CharField(max_length=40)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html", {"handler": type(request).__name__})


@require_http_methods(["GET", "POST"])
def greet(request: HttpRequest) -> HttpResponse:
    """The form (GET); a valid POST keeps the name in the session and redirects to the result page."""
    form = GreetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        request.session["name"] = form.cleaned_data["name"]
        request.session["greetings"] = request.session.get("greetings", 0) + 1
        return redirect("greeted")
    return render(request, "greet.html", {"form": form}, status=400 if form.errors else 200)


@require_GET
def greeted(request: HttpRequest) -> HttpResponse:
    if "name" not in request.session:
        return redirect("greet")
    return render(request, "greeted.html", {
        "name": request.session["name"], "greetings": request.session["greetings"]})


@require_GET
def whoami(request: HttpRequest) -> JsonResponse:
    """What Django knows of the request: which handler built it (ASGIRequest or WSGIRequest) and so on."""
    return JsonResponse({
        "handler": type(request).__name__,
        "path": request.path,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "host": request.get_host(),
        "query": request.GET.dict(),
        "secure": request.is_secure(),
    })
