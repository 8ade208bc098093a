from django.urls import path

from mysite import views

urlpatterns = [
    path("", views.home, name="home"),
    path("greet/", views.greet, name="greet"),
    path("greet/done/", views.greeted, name="greeted"),
    path("whoami/", views.whoami, name="whoami"),
]
