from dashboard.views import autoscaling

autoscaling.render()
