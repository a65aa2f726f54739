"""Order views: a DRF ViewSet plus a few plain views."""

from django.http import JsonResponse
from rest_framework import permissions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import Order
from .serializers import OrderSerializer
from .services import cancel_order, place_order


class OrderViewSet(viewsets.ModelViewSet):
    serializer_class = OrderSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_queryset(self):
        return Order.objects.filter(user=self.request.user).prefetch_related("lines")

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        order = cancel_order(self.get_object())
        return Response(OrderSerializer(order).data)


class CheckoutView(APIView):
    def post(self, request):
        order = place_order(request.user, request.data.get("items", []))
        return Response(OrderSerializer(order).data, status=201)


def cart_summary(request):
    cart = request.session.get("cart", {})
    count = sum(cart.values())
    return JsonResponse({"items": count})
