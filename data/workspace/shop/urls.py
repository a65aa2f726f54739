"""URL routes of the shop project."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from accounts import views as account_views
from orders import views as order_views

router = DefaultRouter()
router.register("orders", order_views.OrderViewSet, basename="order")

urlpatterns = [
    path("users/", account_views.UserListView.as_view(), name="user-list"),
    path("users/<int:pk>/", account_views.user_detail, name="user-detail"),
    path("login/", account_views.LoginView.as_view(), name="login"),
    path("logout/", account_views.logout_view, name="logout"),
    path("cart/", order_views.cart_summary, name="cart-summary"),
    path("checkout/", order_views.CheckoutView.as_view(), name="checkout"),
    path("api/", include(router.urls)),
]
