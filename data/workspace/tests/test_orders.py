"""Tests for order services and tasks."""

from decimal import Decimal

import pytest

from accounts.models import User
from orders.models import Product
from orders.services import OutOfStock, cancel_order, place_order


@pytest.fixture
def user(db):
    return User.objects.create_user("cy", "cy@example.com", "pw")


def test_place_order_decrements_stock(user):
    Product.objects.create(name="Mug", sku="MUG-1", price=Decimal("9.50"), stock=3)
    order = place_order(user, [{"sku": "MUG-1", "quantity": 2}])
    assert order.total() == Decimal("19.00")
    assert Product.objects.get(sku="MUG-1").stock == 1


def test_place_order_out_of_stock(user):
    Product.objects.create(name="Pen", sku="PEN-1", price=Decimal("1.00"), stock=0)
    with pytest.raises(OutOfStock):
        place_order(user, [{"sku": "PEN-1"}])


def test_cancel_order(user):
    order = place_order(user, [])
    assert cancel_order(order).status == "cancelled"
