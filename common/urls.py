app_name = "common"

urlpatterns: list = []
