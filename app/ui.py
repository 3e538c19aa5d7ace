"""The web page: caption an aerial image, see why (mask, composition, prompt), change the why (edit the composition and
caption it again), and caption a batch. ``app/page.py`` calls :func:`render`; the computing is in :mod:`app.core`.

Models load once per app process (``st.cache_resource``); an image's analysis is kept by the models (its bytes'
hash), so the reruns that every click makes do not segment it again. An image that cannot be read, and any failure
while captioning it, is a message in the page: the app keeps running.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from pathlib import Path

import streamlit as st

from aerialdata.images import list_images
from app.core import Analysis, Models, Settings, batch_rows, class_rows, log, results_json, rows_csv
from app.edits import (
    POSITION_NAMES,
    add_relation,
    drop_relation,
    drop_scene,
    relation_text,
    remove_class,
    scenes_text,
    set_percent,
    set_position,
    set_regions,
    set_scene,
)
from composition.relations import RELATIONS
from composition.schema import problems
from composition.text import to_prompt
from segcap.errors import DataError, SegcapError

TITLE = "segcap"
SUBTITLE = ("Caption an aerial image, see why, change the why: segmenter -> composition (class percentages, centres, "
            "regions, relations) -> prompt text -> fine-tuned language model -> caption")
DEMO_PREFIX = "demo: "
ANOTHER_SCENE = "(another scene)"


@st.cache_resource(show_spinner="Loading the models (once per app process)...")
def load_models(segmentation: str, llm: str, run_dir: str | None, captions: str | None, num_beams: int,
                scale: float, threads: int | None) -> Models:
    return Models(Settings(Path(segmentation), Path(llm), None if run_dir is None else Path(run_dir),
                           None if captions is None else Path(captions), num_beams, scale, threads))


def render(settings: Settings) -> None:
    """The whole page for one rerun."""
    st.set_page_config(page_title="segcap", page_icon=":satellite:", layout="wide")
    st.title(TITLE)
    st.caption(SUBTITLE)
    try:
        models = load_models(str(settings.segmentation), str(settings.llm),
                             None if settings.run_dir is None else str(settings.run_dir),
                             None if settings.captions is None else str(settings.captions), settings.num_beams,
                             settings.scale, settings.threads)
    except SegcapError as e:
        st.error(f"The models could not be loaded: {e}")
        st.stop()
    chosen, beams, scale = sidebar(models)
    caption_tab, edit_tab, batch_tab = st.tabs(["Caption", "Edit the composition", "Batch"])
    analysis = None
    with caption_tab:
        if chosen is None:
            st.info("Upload an image in the sidebar (any format: JPEG, PNG, TIFF, ...) or pick a demo image.")
        else:
            analysis = analyse(models, *chosen, scale=scale, num_beams=beams)
            if analysis is not None:
                show_analysis(models, analysis)
    with edit_tab:
        if analysis is None:
            st.info("Caption an image first (sidebar): its composition can then be edited here.")
        else:
            show_editor(models, analysis, beams)
    with batch_tab:
        show_batch(models, scale, beams)


# ---------------------------------------------------------------------------------------------------- sidebar
def sidebar(models: Models) -> tuple[tuple[str, bytes | None, Path | None] | None, int, float]:
    """The image to show (name, bytes or None, path or None), the beams and the scale."""
    s = models.settings
    with st.sidebar:
        uploads = st.file_uploader("Images", accept_multiple_files=True, key="uploads",
                                   help="Any format Pillow reads (JPEG, PNG, TIFF incl. 16-bit, WebP, BMP, ...)")
        uploads = list(uploads or [])
        choices: dict[str, tuple[str, bytes | None, Path | None]] = {}
        for u in reversed(uploads):  # the newest upload first: it is shown as soon as it arrives
            label = u.name if u.name not in choices else f"{u.name} ({sum(k.startswith(u.name) for k in choices) + 1})"
            choices[label] = (u.name, u.getvalue(), None)
        for p in models.demo_images:
            choices[DEMO_PREFIX + p.name] = (p.name, None, p)
        chosen = None
        if choices:
            names = hashlib.sha1("\n".join(u.name for u in uploads).encode()).hexdigest()[:12]
            label = st.selectbox("Image", list(choices), key=f"pick:{names}",
                                 help="Your uploads (the newest first), then the demo caption set's test images")
            chosen = choices[label]
        beams = int(st.number_input("Beams of the chain's beam search", min_value=1, max_value=8,
                                    value=s.num_beams, key="beams"))
        scale = float(st.number_input("Scale before segmenting", min_value=0.05, max_value=8.0, value=s.scale,
                                      step=0.05, key="scale",
                                      help="The image's metres per pixel over the caption set's (1 for the demo)"))
        with st.expander("Models"):
            st.markdown(f"- segmenter: `{s.segmentation}`\n- caption LM: `{s.llm}`\n- run: `{s.run_dir}`\n"
                        f"- systems: {', '.join(models.systems(beams))}")
            for note in models.notes:
                st.caption(note)
    return chosen, beams, scale


def analyse(models: Models, name: str, data: bytes | None, path: Path | None, scale: float,
            num_beams: int) -> Analysis | None:
    """The image's analysis, or None with the reason in the page."""
    try:
        with st.spinner(f"Segmenting and captioning {name}..."):
            return models.analyse(name, data=data, path=path, scale=scale, num_beams=num_beams)
    except DataError as e:
        st.error(str(e))
    except Exception as e:  # noqa: BLE001 - any failure is a message in the page; the console keeps the traceback
        log(traceback.format_exc())
        st.error(f"{name}: could not be captioned ({e.__class__.__name__}: {e})")
    return None


# ---------------------------------------------------------------------------------------------------- caption tab
def show_analysis(models: Models, a: Analysis) -> None:
    """The captions first, then the overlay (drawing it takes longer than captioning), then the composition."""
    if a.notice:
        st.warning(a.notice)
    left, right = st.columns([3, 2])
    with left:
        picture = st.empty()
    with right:
        st.subheader("Captions")
        st.table([{"system": k, "caption": v} for k, v in a.captions.items()])
        if a.references:
            st.subheader("Reference captions")
            st.table([{"reference": r} for r in a.references])
        t = a.seconds
        st.caption(f"{a.name}: {a.width}x{a.height}; segmented in {t['segment']:.2f} s, captioned in "
                   f"{t['caption']:.2f} s, {t['total']:.2f} s in all")
    try:
        png = models.overlay(a)
    except Exception as e:  # noqa: BLE001 - the captions stay on the page
        log(traceback.format_exc())
        picture.error(f"{a.name}: the overlay could not be drawn ({e.__class__.__name__}: {e})")
    else:
        picture.image(png, caption="mask overlay: each class's enclosing circle, + its centre, x its centroid",
                      width="stretch")
    st.subheader("Composition")
    st.dataframe(class_rows(a.record), hide_index=True)
    st.markdown("**Relations:** " + ("; ".join(relation_text(r) for r in a.record["relations"]) or "(none)"))
    if a.record.get("scenes"):
        st.markdown("**Scenes (the scene head's most probable):** " + scenes_text(a.record))
    st.markdown("**Prompt text the language model read:**")
    st.code(a.prompt, language=None, wrap_lines=True)
    with st.expander("Composition record (JSON)"):
        st.json(a.record, expanded=True)
    st.download_button("Download the composition (JSON)", data=json.dumps(a.record, indent=1),
                       file_name=f"{Path(a.name).stem}.composition.json", mime="application/json",
                       key=f"download:{a.key}")


# ---------------------------------------------------------------------------------------------------- edit tab
def _state(k: str, original: dict) -> dict:
    """This image's edit state: the edited record, a version counted up at each edit (fresh widgets), a message."""
    edits = st.session_state.setdefault("edits", {})
    return edits.setdefault(k, {"record": original, "version": 0, "error": None})


def _apply(k: str, change) -> None:
    """Apply ``change(record) -> record`` to this image's edited record (a button's callback)."""
    state = st.session_state["edits"][k]
    try:
        state["record"] = change(state["record"])
        state["version"] += 1
        state["error"] = None
    except DataError as e:
        state["error"] = str(e)
    except (ValueError, TypeError, KeyError) as e:
        state["error"] = f"{e.__class__.__name__}: {e}"


def _change_class(k: str, v: int) -> None:
    ss = st.session_state
    name = ss[f"class:{k}:{v}"]

    def change(record):
        c = next(c for c in record["classes"] if c["name"] == name)
        if round(ss[f"percent:{k}:{v}:{name}"], 1) != c["percent"]:
            record = set_percent(record, name, ss[f"percent:{k}:{v}:{name}"])
        if ss[f"position:{k}:{v}:{name}"] != c["position"]:
            record = set_position(record, name, ss[f"position:{k}:{v}:{name}"])
        if ss[f"regions:{k}:{v}:{name}"] != c["regions"]:
            record = set_regions(record, name, ss[f"regions:{k}:{v}:{name}"])
        return record

    _apply(k, change)


# The buttons' callbacks run before the page is drawn again, and read the widgets' values as they are then.
def _remove_class(k: str, v: int) -> None:
    _apply(k, lambda r: remove_class(r, st.session_state[f"class:{k}:{v}"]))


def _drop_relation(k: str, v: int) -> None:
    chosen = st.session_state[f"relation:{k}:{v}"]
    _apply(k, lambda r: drop_relation(r, int(chosen.split(".", 1)[0]) - 1))


def _add_relation(k: str, v: int) -> None:
    ss = st.session_state
    _apply(k, lambda r: add_relation(r, ss[f"subject:{k}:{v}"], ss[f"rel:{k}:{v}"], ss[f"object:{k}:{v}"]))


def _apply_json(k: str, v: int) -> None:
    _apply(k, lambda r: _from_json(st.session_state[f"json:{k}:{v}"]))


def _scene_name(k: str, v: int) -> str:
    ss = st.session_state
    chosen = ss[f"scene:{k}:{v}"]
    return ss[f"scene_name:{k}:{v}"] if chosen == ANOTHER_SCENE else chosen


def _set_scene(k: str, v: int) -> None:
    ss = st.session_state
    name, chosen = _scene_name(k, v), ss[f"scene:{k}:{v}"]
    _apply(k, lambda r: set_scene(r, name, ss[f"scene_p:{k}:{v}:{chosen}"]))


def _drop_scene(k: str, v: int) -> None:
    _apply(k, lambda r: drop_scene(r, st.session_state[f"scene:{k}:{v}"]))


def _reset(k: str, original: dict) -> None:
    _apply(k, lambda r: original)


def _from_json(text: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e}") from None
    found = problems(record)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataError(f"not a valid composition record: {found[0]}{more}")
    return record


def show_editor(models: Models, a: Analysis, beams: int) -> None:
    k = a.key
    state = _state(k, a.record)
    v = state["version"]
    record = state["record"]
    st.markdown(f"Change what the language model reads about **{a.name}** and caption it again: what does the "
                "caption rely on? Percents stay summing to 100 (the other classes are rescaled).")
    if state["error"]:
        st.error(state["error"])
    names = [c["name"] for c in record["classes"]]
    col_class, col_rel = st.columns(2)
    with col_class:
        st.markdown("**A class**")
        name = st.selectbox("class", names, key=f"class:{k}:{v}")
        c = next(c for c in record["classes"] if c["name"] == name)
        st.number_input("percent", min_value=0.1, max_value=100.0, value=float(c["percent"]), step=1.0,
                        format="%.1f", key=f"percent:{k}:{v}:{name}")
        st.selectbox("position", POSITION_NAMES, index=POSITION_NAMES.index(c["position"]),
                     key=f"position:{k}:{v}:{name}")
        st.number_input("regions", min_value=1, max_value=100_000, value=int(c["regions"]), step=1,
                        key=f"regions:{k}:{v}:{name}")
        b1, b2 = st.columns(2)
        b1.button("Apply to the class", key=f"apply:{k}", on_click=_change_class, args=(k, v))
        b2.button("Remove the class", key=f"remove:{k}", on_click=_remove_class, args=(k, v))
    with col_rel:
        st.markdown("**Relations**")
        texts = [f"{i + 1}. {relation_text(r)}" for i, r in enumerate(record["relations"])]
        if texts:
            st.selectbox("relation", texts, key=f"relation:{k}:{v}")
            st.button("Drop the relation", key=f"drop:{k}", on_click=_drop_relation, args=(k, v))
        else:
            st.caption("(no relations)")
        s1, s2, s3 = st.columns(3)
        s1.selectbox("subject", names, key=f"subject:{k}:{v}")
        s2.selectbox("relation", RELATIONS, key=f"rel:{k}:{v}")
        s3.selectbox("object", names, index=min(1, len(names) - 1), key=f"object:{k}:{v}")
        st.button("Add the relation", key=f"add:{k}", on_click=_add_relation, args=(k, v))
    show_scene_editor(record, k, v)
    with st.expander("Edit the JSON itself"):
        st.text_area("composition record", json.dumps(record, indent=1), height=300, key=f"json:{k}:{v}")
        st.button("Apply the JSON", key=f"apply_json:{k}", on_click=_apply_json, args=(k, v))
    st.button("Back to the segmented composition", key=f"reset:{k}", on_click=_reset, args=(k, a.record))

    try:
        edited = models.caption_record(record, beams)
    except Exception as e:  # noqa: BLE001 - e.g. a class id the models do not know, typed in the JSON
        log(traceback.format_exc())
        st.error(f"the edited composition could not be captioned ({e.__class__.__name__}: {e}); go back to the "
                 "segmented composition or fix the JSON")
        return
    st.subheader("Original and edited")
    p1, p2 = st.columns(2)
    p1.markdown("**Prompt of the segmented composition**")
    p1.code(a.prompt, language=None, wrap_lines=True)
    p2.markdown("**Prompt of the edited composition**")
    p2.code(to_prompt(record), language=None, wrap_lines=True)
    rows = [{"system": system, "original": a.captions.get(system, ""), "edited": caption,
             "changed": "yes" if caption != a.captions.get(system) else ""} for system, caption in edited.items()]
    st.table(rows)
    st.download_button("Download the edited composition (JSON)", data=json.dumps(record, indent=1),
                       file_name=f"{Path(a.name).stem}.edited.composition.json", mime="application/json",
                       key=f"download_edited:{k}")


def show_scene_editor(record: dict, k: str, v: int) -> None:
    """The scene controls: one of the record's scenes (or another, by name), its probability, set or drop it."""
    st.markdown("**Scene**")
    scenes = record.get("scenes") or []
    if not scenes:
        st.caption("(no scenes: the segmenter has no scene head; name one to see what the caption makes of it)")
    c1, c2, c3 = st.columns(3)
    chosen = c1.selectbox("scene", [s["name"] for s in scenes] + [ANOTHER_SCENE], key=f"scene:{k}:{v}")
    if chosen == ANOTHER_SCENE:
        c2.text_input("scene name", key=f"scene_name:{k}:{v}", placeholder="e.g. airplane")
    else:
        c2.caption(f"now {next(s['probability'] for s in scenes if s['name'] == chosen):.3f}")
    known = next((s["probability"] for s in scenes if s["name"] == chosen), 0.9)
    c3.number_input("probability", min_value=0.0, max_value=1.0, value=float(known), step=0.05, format="%.3f",
                    key=f"scene_p:{k}:{v}:{chosen}")
    b1, b2 = st.columns(2)
    b1.button("Set the scene", key=f"set_scene:{k}", on_click=_set_scene, args=(k, v))
    if chosen != ANOTHER_SCENE:
        b2.button("Drop the scene", key=f"drop_scene:{k}", on_click=_drop_scene, args=(k, v))


# ---------------------------------------------------------------------------------------------------- batch tab
def show_batch(models: Models, scale: float, beams: int) -> None:
    st.markdown("Caption many images at once; the results come as a table, CSV and JSON (with each composition).")
    uploads = st.file_uploader("Images for the batch", accept_multiple_files=True, key="batch_uploads")
    folder = st.text_input("...and/or every image in a folder on the machine running the app", key="batch_folder")
    demo = st.checkbox(f"...and the {len(models.demo_images)} demo test images", key="batch_demo",
                       disabled=not models.demo_images)
    if st.button("Caption them all", key="batch_run", type="primary"):
        items: list[tuple[str, bytes | None, Path | None]] = [(u.name, u.getvalue(), None) for u in uploads or []]
        problems_found = []
        if folder.strip():
            where = Path(folder.strip()).expanduser()
            if not where.is_dir():
                problems_found.append(f"{where}: not a folder on this machine")
            else:
                found = list_images(where)
                items += [(p.name, None, p) for p in found]
                if not found:
                    problems_found.append(f"{where}: no images there (jpg, png, tif, bmp, webp)")
        if demo:
            items += [(p.name, None, p) for p in models.demo_images]
        bar = st.progress(0.0, text="starting")

        def progress(i: int, n: int, name: str) -> None:
            bar.progress(i / max(n, 1), text=f"{i}/{n} {name}" if name else f"{n} images done")

        try:
            done, failed = models.batch(items, progress) if items else ([], [])
        except Exception as e:  # noqa: BLE001 - a message in the page, never a traceback
            log(traceback.format_exc())
            done, failed = [], [f"the batch stopped: {e.__class__.__name__}: {e}"]
        if not items and not problems_found:
            problems_found.append("nothing to caption: upload images, name a folder or tick the demo images")
        st.session_state["batch"] = {"rows": batch_rows(done), "json": results_json(done),
                                     "failed": problems_found + failed}
    result = st.session_state.get("batch")
    if not result:
        return
    for message in result["failed"]:
        st.warning(message)
    if result["rows"]:
        st.dataframe(result["rows"], hide_index=True)
        d1, d2 = st.columns(2)
        d1.download_button("Download the captions (CSV)", data=rows_csv(result["rows"]), file_name="captions.csv",
                           mime="text/csv", key="batch_csv")
        d2.download_button("Download the captions and compositions (JSON)", data=result["json"],
                           file_name="captions.json", mime="application/json", key="batch_json")
