"""Tests for the account views."""

import pytest
from rest_framework.test import APIClient

from accounts.models import User


@pytest.fixture
def client(db):
    return APIClient()


def test_user_list_requires_login(client):
    assert client.get("/users/").status_code == 403


def test_login_with_bad_password(client):
    User.objects.create_user("ada", "ada@example.com", "right")
    response = client.post("/login/", {"username": "ada", "password": "wrong"})
    assert response.status_code == 401


def test_user_detail(client):
    user = User.objects.create_user("bob", "bob@example.com", "pw")
    client.force_authenticate(user)
    response = client.get(f"/users/{user.pk}/")
    assert response.json()["username"] == "bob"
