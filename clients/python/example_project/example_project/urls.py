from django.urls import path

from pushdemo import views

urlpatterns = [
    path("push/", views.push, name="push"),
]
