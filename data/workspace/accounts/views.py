"""Account views: function-based and class-based."""

from django.contrib.auth import authenticate, login, logout
from django.shortcuts import get_object_or_404, redirect
from rest_framework import generics, status
from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import User
from .serializers import LoginSerializer, UserSerializer


class UserListView(generics.ListAPIView):
    queryset = User.objects.select_related("profile").order_by("username")
    serializer_class = UserSerializer


@api_view(["GET"])
def user_detail(request, pk: int):
    user = get_object_or_404(User, pk=pk)
    return Response(UserSerializer(user).data)


class LoginView(APIView):
    permission_classes = []

    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request, **serializer.validated_data)
        if user is None:
            return Response({"detail": "Invalid credentials"}, status=status.HTTP_401_UNAUTHORIZED)
        login(request, user)
        return Response(UserSerializer(user).data)


def logout_view(request):
    logout(request)
    return redirect("login")
