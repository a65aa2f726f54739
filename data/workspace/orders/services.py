"""Business logic for orders, kept out of the views."""

from django.db import transaction

from .models import Order, OrderLine, Product


class OutOfStock(Exception):
    pass


@transaction.atomic
def place_order(user, items: list[dict]) -> Order:
    order = Order.objects.create(user=user)
    for item in items:
        product = Product.objects.select_for_update().get(sku=item["sku"])
        quantity = int(item.get("quantity", 1))
        if product.stock < quantity:
            raise OutOfStock(product.sku)
        product.stock -= quantity
        product.save(update_fields=["stock"])
        OrderLine.objects.create(
            order=order, product=product, quantity=quantity, unit_price=product.price
        )
    return order


def cancel_order(order: Order) -> Order:
    if order.status == Order.Status.SHIPPED:
        raise ValueError("shipped orders cannot be cancelled")
    order.status = Order.Status.CANCELLED
    order.save(update_fields=["status"])
    return order
