"""capsim's what-if dashboard: `capsim dashboard` (or `make run`) starts it.

The entry point only sets the page up and hands over to the page the user picked; every page
lives in ``dashboard/views`` (the files in ``dashboard/pages`` just call them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

st.set_page_config(page_title="capsim what-if", page_icon=":material/speed:", layout="wide")
# Denser than the defaults so a 1280x800 screen shows the numbers and the first charts together.
st.html("""<style>
[data-testid="stMainBlockContainer"] { padding-top: 2.2rem; padding-bottom: 2rem; }
[data-testid="stMetricValue"] { font-size: 1.7rem; }
h1 { font-size: 2.1rem !important; padding-bottom: 0.2rem !important; }
</style>""")
PAGES = [
    st.Page("pages/what_if.py", title="What-if", icon=":material/tune:", default=True),
    st.Page("pages/batching.py", title="Batching trade-off", icon=":material/stacks:"),
    st.Page("pages/autoscaling.py", title="Autoscaling", icon=":material/trending_up:"),
    st.Page("pages/calibration.py", title="Calibration", icon=":material/straighten:"),
    st.Page("pages/planner.py", title="Planner", icon=":material/explore:"),
]
st.navigation(PAGES).run()
