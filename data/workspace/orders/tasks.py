"""Background jobs for orders (async helpers used by the worker)."""

import asyncio
import logging

import httpx

from .models import Order

log = logging.getLogger(__name__)

SHIPPING_API = "https://shipping.example.com/v1"


async def notify_shipping(order_id: int) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        await client.post(f"{SHIPPING_API}/shipments", json={"order": order_id})


async def send_receipt(email: str, order_id: int) -> bool:
    await asyncio.sleep(0)  # the real mailer is plugged in by the worker
    log.info("receipt for order %s sent to %s", order_id, email)
    return True


async def process_paid_orders() -> int:
    paid = [o async for o in Order.objects.filter(status=Order.Status.PAID)]
    await asyncio.gather(*(notify_shipping(o.id) for o in paid))
    return len(paid)


def expire_stale_carts(max_age_days: int = 7) -> int:
    # Synchronous on purpose: runs from a cron job, not the event loop.
    # TODO: delete session carts older than max_age_days once carts move to the database.
    return 0
