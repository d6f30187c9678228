"""capsim's what-if dashboard: `capsim dashboard` (or `make run`) starts it.

The entry point only sets the page up and hands over to the page the user picked. The pages are the
``render`` functions of ``dashboard/views``, named here with their titles, icons and URLs; this is the
one navigation (there is no ``pages/`` folder for Streamlit to discover beside it), so a page opened
by its URL (``/calibration``) shows the same sidebar and layout as one reached by a click.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from dashboard.views import (  # noqa: E402
    autoscaling,
    batching,
    calibration,
    llm,
    offline_streaming,
    online_architectures,
    planner,
    training,
    what_if,
)

st.set_page_config(page_title="capsim what-if", page_icon=":material/speed:", layout="wide")
# Denser than the defaults so a 1280x800 screen shows the numbers and the first charts together.
st.html("""<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; padding-bottom: 2rem; }
[data-testid="stMetricValue"] { font-size: 1.7rem; }
h1 { font-size: 2.1rem !important; padding-bottom: 0.2rem !important; }
</style>""")
PAGES = [
    st.Page(what_if.render, title="What-if", icon=":material/tune:", url_path="what-if", default=True),
    st.Page(batching.render, title="Batching trade-off", icon=":material/stacks:", url_path="batching"),
    st.Page(autoscaling.render, title="Autoscaling", icon=":material/trending_up:", url_path="autoscaling"),
    st.Page(calibration.render, title="Calibration", icon=":material/straighten:", url_path="calibration"),
    st.Page(planner.render, title="Planner", icon=":material/explore:", url_path="planner"),
    st.Page(llm.render, title=llm.TITLE, icon=llm.ICON, url_path="llm"),
    st.Page(offline_streaming.render, title="Offline and streaming", icon=":material/conveyor_belt:",
            url_path="offline-streaming"),
    st.Page(online_architectures.render, title="Online architectures", icon=":material/hub:",
            url_path="online-architectures"),
    st.Page(training.render, title="Training", icon=":material/model_training:", url_path="training"),
]
st.navigation(PAGES).run()
