from dashboard.views import planner

planner.render()
