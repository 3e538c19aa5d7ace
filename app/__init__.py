"""segcap's web app: caption an aerial image in the browser, see why, change the why.

    make app                          # or: python -m app   (runs/demo's models; http://localhost:8501)
    python -m app --help              # other checkpoints, run folder, caption set, port

- :mod:`app.__main__`: the launcher (checks the folders, starts ``streamlit run app/page.py`` offline);
- :mod:`app.page`, :mod:`app.ui`: the page (Caption, Edit the composition, Batch);
- :mod:`app.core`: what the page computes, without Streamlit (models loaded once, one image's analysis, batches);
- :mod:`app.edits`: edits of a composition record that keep it valid;
- :mod:`app.browser`: headless Chromium over its DevTools protocol (the browser test, the README's screenshot).
"""
