from dashboard.views import batching

batching.render()
