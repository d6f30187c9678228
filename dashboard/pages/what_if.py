from dashboard.views import what_if

what_if.render()
