"""URLs of the reports, mounted at /reports/; the sync status report is the sync app's."""

from django.urls import path

from . import views

app_name = "reports"

urlpatterns = [
    path("", views.reports_index, name="index"),
    path("stock-on-hand/", views.stock_on_hand_report, name="stock_on_hand"),
    path("expiring-stock/", views.expiring_stock_report, name="expiring_stock"),
    path("transactions/", views.transactions_report, name="transactions"),
    path("goods-in-transit/", views.goods_in_transit_report, name="goods_in_transit"),
]
