from dashboard.views import calibration

calibration.render()
