"""The Streamlit page script: ``streamlit run app/page.py -- [options of python -m app]`` (python -m app runs it)."""

import sys

import streamlit as st

from app.core import Settings
from app.ui import render
from segcap.cli import parse
from segcap.errors import ConfigError

try:
    settings = Settings(**parse(Settings, sys.argv[1:]))
except ConfigError as e:
    st.error(f"app options: {e}")
    st.stop()
render(settings)
