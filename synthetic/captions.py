"""RSICD-style captions written from a scene's measured facts (:mod:`synthetic.facts`), 5 per image.

Captions name only what the mask holds: every noun a template may use is listed once in :data:`WORD_CLASSES` with the
source classes it stands for, and a template is used only when those classes are present (tests check every caption
against its mask with :func:`mentioned_classes`). Counts ("a", "some", "many") come from region counts, positions
("on the left", "in the middle") from centroids, "river" versus "pond" from the water's elongation: the things a
composition record carries. Wording varies between templates and synonyms; duplicates among an image's five captions
happen, as in RSICD.
"""

from __future__ import annotations

import re

import numpy as np

from synthetic.facts import present

# word (singular and plural forms share an entry) -> source classes it names; a caption may use the word only if
# one of these classes is in the mask
WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "building": ("roof", "wall"), "buildings": ("roof", "wall"), "house": ("roof", "wall"),
    "houses": ("roof", "wall"), "residential": ("roof", "wall"), "factory": ("roof", "wall"),
    "factories": ("roof", "wall"), "industrial": ("roof", "wall"), "warehouses": ("roof", "wall"),
    "roofs": ("roof",),
    "tree": ("tree",), "trees": ("tree",), "forest": ("tree",), "woods": ("tree",),
    "grass": ("grass",), "lawn": ("grass",), "lawns": ("grass",), "meadow": ("grass",), "meadows": ("grass",),
    "grassland": ("grass",), "field": ("grass",), "football": ("grass",),
    "farmland": ("vegetation",), "farmlands": ("vegetation",), "fields": ("vegetation",), "crops": ("vegetation",),
    "shrubs": ("vegetation", "bald-tree"), "bushes": ("vegetation", "bald-tree"),
    "road": ("paved-area",), "roads": ("paved-area",), "street": ("paved-area",), "streets": ("paved-area",),
    "bridge": ("paved-area",), "parking": ("paved-area",), "track": ("paved-area",),
    "playground": ("paved-area",), "paths": ("paved-area", "gravel", "dirt"), "path": ("paved-area", "gravel", "dirt"),
    "car": ("car",), "cars": ("car",), "vehicles": ("car",),
    "pond": ("water",), "lake": ("water",), "river": ("water",), "water": ("water",), "sea": ("water",),
    "ocean": ("water",), "waves": ("water",),
    "pool": ("pool",), "pools": ("pool",),
    "beach": ("dirt",), "sand": ("dirt",), "bare": ("dirt", "gravel", "rocks"), "soil": ("dirt",),
    "rocks": ("rocks",), "stones": ("rocks", "gravel"), "gravel": ("gravel",),
    "park": ("grass", "tree"),
}

# every other word a template may use: they name no class (tests check that captions use no word outside the two
# lists, so a new noun cannot slip past the caption-content check)
OTHER_WORDS = frozenset("""
a across along among an and are area around arranged at banks beside between big blue both bottom brown by center
corner crossed curved dense densely distributed divided empty encircles few five four from full go goes green hit in
inside into is it its land large left long lot lots many middle near neatly next nothing of on order over parked
passes picture piece pieces planted rectangular red right rows running runs scattered several side sides small some
sparse sparsely straight surrounded swimming the there this three through to top two wide with yellow
closely different grow growing oval standard surround surrounding surrounds together
""".split())

_NUM = {2: "two", 3: "three", 4: "four", 5: "five"}


def _choose(rng: np.random.Generator, options) -> str:
    """One of ``options`` (much faster than ``rng.choice``, which builds an array each call)."""
    return options[int(rng.integers(0, len(options)))]


def mentioned_classes(caption: str) -> dict[str, tuple[str, ...]]:
    """The words of ``caption`` that name things, each with the source classes it stands for."""
    return {w: WORD_CLASSES[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in WORD_CLASSES}


def quantity_word(n: int, rng: np.random.Generator) -> str:
    """A count as RSICD says it: 1 -> a, 2..5 -> some / several / a few / two.., 6..9 -> some / several / many,
    10 and more -> many / lots of."""
    if n <= 1:
        return "a"
    if n <= 5:
        return _choose(rng, ["some", "several", "a few", _NUM.get(n, "some")])
    if n <= 9:
        return _choose(rng, ["some", "several", "many"])
    return _choose(rng, ["many", "many", "lots of", "a lot of"])


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


class _Say:
    """Phrase helpers bound to one scene's facts and random generator."""

    def __init__(self, facts: dict, rng: np.random.Generator):
        self.f, self.rng = facts, rng
        self.counts, self.cells = facts["counts"], facts["cells"]

    def pick(self, *options: str) -> str:
        return _choose(self.rng, options)

    def n(self, thing: str) -> int:
        return int(self.counts.get(thing, 0))

    def has(self, source: str, min_percent: float = 0.05) -> bool:
        return present(self.f, source, min_percent)

    def qty(self, thing: str, singular: str, plural: str, adj: str = "") -> str:
        n = self.n(thing)
        q = quantity_word(n, self.rng)
        noun = singular if n == 1 else plural
        noun = f"{adj} {noun}" if adj else noun
        return _a(noun) if q == "a" else f"{q} {noun}"

    def buildings(self) -> str:
        noun = self.pick("building", "house") if self.n("building") == 1 else self.pick("buildings", "houses")
        q = quantity_word(self.n("building"), self.rng)
        return _a(noun) if q == "a" else f"{q} {noun}"

    def trees(self) -> str:
        if self.has("tree", 8.0) or self.n("tree") >= 10:
            return self.pick("many green trees", "many trees", "lots of green trees", "a lot of trees")
        return self.qty("tree", "tree", "trees", self.pick("", "green"))

    def where(self, thing: str) -> str:
        """Where a thing is, from its centroid's 3x3 cell: "on the left", "in the middle", ..."""
        cell = self.cells.get(thing, "center")
        if cell == "center":
            return self.pick("in the middle", "in the center")
        if " " in cell:
            return self.pick(f"in the {cell} corner", f"at the {cell}")
        if cell in ("left", "right"):
            return self.pick(f"on the {cell}", f"on the {cell} side", f"on the {cell} of the picture")
        return self.pick(f"at the {cell}", f"on the {cell} side", f"at the {cell} of the picture")

    def side(self, thing: str) -> str | None:
        """Like :meth:`where` but only for the off-centre cells (None in the middle)."""
        return None if self.cells.get(thing, "center") == "center" else self.where(thing)

    def ground(self) -> str:
        """What covers most of the land: forest, farmland, meadow or bare land."""
        p = self.f["percent"]
        options = {"forest": p.get("tree", 0), "farmland": p.get("vegetation", 0), "meadow": p.get("grass", 0),
                   "bare land": p.get("dirt", 0) + p.get("gravel", 0)}
        return max(options, key=options.get)


def _pond(s: _Say) -> list[str]:
    size = s.f["water"]["percent"]
    pond = "small pond" if size < 6 else ("large pond" if size > 14 else "pond")
    out = [f"there is {_a(pond)} {s.where('water')} of the {s.pick('meadow', 'grassland', 'lawn')} ."] if s.has("grass", 10) else []
    if s.n("tree"):
        out += [f"{s.trees()} are around {_a(pond)} .", f"{s.trees()} are planted around the {pond} .",
                f"{_a(pond)} is surrounded by {s.trees()} .", f"there are {s.trees()} around {_a(pond)} .",
                f"{_a(pond)} {s.where('water')} is surrounded by {s.trees()} .",
                f"{s.trees()} {s.pick('surround', 'are surrounding')} {_a(pond)} ."]
    if s.n("building"):
        out += [f"{s.buildings()} and {s.trees() if s.n('tree') else 'some meadows'} are around {_a(pond)} ."]
        if s.side("building"):
            out += [f"{_a(pond)} is near {s.buildings()} {s.side('building')} ."]
    if s.n("road"):
        out += [f"{_a(pond)} is near a road ."]
    if s.f["water"]["green_around"] > 0.7 and s.has("grass", 10):
        out += [f"{_a(pond)} is surrounded by green {s.pick('meadows', 'grass', 'lawns')} ."]
    return out or [f"there is {_a(pond)} {s.where('water')} ."]


def _river(s: _Say) -> list[str]:
    ground = s.ground()
    spans = s.f["water"]["spans"]
    run = {"horizontal": "from left to right", "vertical": "from top to bottom"}.get(spans, "across the picture")
    out = [f"a river passes through the {ground} .", f"a river runs {run} through the {ground} .",
           f"a {s.pick('long', 'curved', 'wide')} river goes through the {ground} ."]
    if s.n("tree"):
        out += [f"{s.trees()} are on both sides of the river .", f"a river with {s.trees()} on its banks .",
                f"{s.trees()} are {s.pick('planted', 'growing')} along the river .",
                f"there are {s.trees()} near a {s.pick('long', 'wide', 'curved')} river ."]
    if s.n("building") and s.side("building"):
        out += [f"a river passes through the {ground} with {s.buildings()} {s.side('building')} .",
                f"{s.buildings()} are {s.side('building')} of the river ."]
    elif s.n("building"):
        out += [f"{s.buildings()} are near a river ."]
    if s.has("paved-area", 0.3):
        out += ["a bridge is over the river .", f"a bridge goes across the river in the {ground} ."]
    return out


def _forest(s: _Say) -> list[str]:
    out = ["many green trees are in the forest .", "it is a dense forest .", "the forest is full of green trees .",
           "many trees are in a piece of forest .", f"a large piece of {s.pick('forest', 'woods')} .",
           f"{s.pick('dense', 'many', 'lots of')} trees {s.pick('grow', 'are growing')} closely together in the forest .",
           f"this is a {s.pick('dense', 'green', 'large')} forest with many trees ."]
    if s.has("dirt", 1.0):
        out += ["a path goes through the forest .", "a path passes through the dense forest ."]
    if s.n("grass"):
        out += [f"there is a piece of {s.pick('grass', 'meadow')} {s.where('grass')} of the forest ."]
    if s.n("building"):
        out += [f"{s.buildings()} are in the forest .", f"{s.buildings()} are surrounded by {s.trees()} ."]
    return out


def _denseresidential(s: _Say) -> list[str]:
    out = [f"{s.buildings()} are densely arranged .", f"{s.buildings()} are arranged in rows along the roads .",
           f"there are {s.buildings()} in the dense residential area .",
           f"{s.buildings()} are {s.pick('neatly', 'closely')} arranged {s.pick('in this dense residential area', 'beside the roads')} .",
           "many houses and some roads are in the dense residential area .",
           f"a dense residential area with {s.buildings()} and {s.pick('straight', 'crossed', 'some')} roads ."]
    if s.n("tree"):
        out += [f"a dense residential area with {s.trees()} .", f"{s.trees()} are among {s.buildings()} ."]
    if s.n("car"):
        out += [f"{s.qty('car', 'car', 'cars')} are parked on the roads between {s.buildings()} ."]
    return out


def _sparseresidential(s: _Say) -> list[str]:
    out = [f"{s.buildings()} are {s.pick('scattered', 'sparsely distributed')} in the sparse residential area .",
           f"this is a sparse residential area with {s.buildings()} ."]
    if s.n("tree"):
        out += [f"{s.buildings()} are scattered among {s.trees()} .",
                f"{s.trees()} and {s.buildings()} are on both sides of the road ."]
    if s.n("road"):
        out += [f"{s.buildings()} are beside a road .",
                f"a sparse residential area with {s.buildings()} and {'a road' if s.n('road') == 1 else 'some roads'} ."]
    if s.n("pool"):
        out += [f"{s.qty('pool', 'swimming pool', 'swimming pools')} {'is' if s.n('pool') == 1 else 'are'} near the houses ."]
    if s.has("grass", 20):
        out += [f"{s.buildings()} are on the green {s.pick('meadow', 'grassland', 'lawn')} ."]
    return out


def _parking(s: _Say) -> list[str]:
    cars = s.n("car")
    out = []
    if cars:
        out += [f"{s.qty('car', 'car', 'cars')} are parked in the parking lot .",
                f"there are {s.qty('car', 'car', 'cars')} in the parking lot .",
                f"{s.qty('car', 'car', 'cars')} are parked {s.pick('neatly', 'in rows', '')} in a {s.pick('large', 'big', '')} parking lot ."]
        if cars >= 10:
            out += ["many cars are parked in rows .", "a parking lot full of cars ."]
            if cars >= 60:
                out += ["a parking lot is full of cars arranged neatly ."]
    else:
        out += ["an empty parking lot ."]
    if s.n("tree"):
        out += [f"a parking lot is surrounded by {s.trees()} .", f"{s.trees()} are around a parking lot ."]
    if s.n("building"):
        out += [f"a parking lot is near {s.buildings()} ."]
        if s.side("building"):
            out += [f"a parking lot with {s.buildings()} {s.side('building')} ."]
    return out


def _farmland(s: _Say) -> list[str]:
    out = [f"many pieces of farmland are arranged {s.pick('neatly', 'in order')} .", "many rectangular farmlands .",
           f"the farmland is divided into {s.qty('field', 'field', 'fields')} .",
           f"it is a piece of farmland with {s.qty('field', 'field', 'fields', s.pick('', 'rectangular'))} .",
           f"{s.pick('many', 'some', 'lots of')} pieces of {s.pick('green', 'rectangular', '')} farmland .",
           f"there are {s.qty('field', 'field', 'fields')} of different crops ."]
    if s.n("building"):
        out += [f"{s.buildings()} are in the farmland .", f"{s.buildings()} are {s.where('building')} of the farmland ."]
    if s.n("road"):
        out += ["a road goes through the farmland .", f"some farmlands are {s.pick('beside', 'near')} a road ."]
    if s.n("tree"):
        out += [f"{s.trees()} are beside the farmland ."]
    return out


def _bareland(s: _Say) -> list[str]:
    out = ["it is a piece of bare land .", f"a large piece of {s.pick('yellow', 'brown', '')} bare land .".replace("  ", " "),
           "this is a piece of bare land with nothing ." if not (s.n("building") or s.has("vegetation", 0.3)) else
           "it is a piece of bare land ."]
    if s.has("vegetation", 0.3) or s.has("bald-tree", 0.3):
        out += [f"some {s.pick('shrubs', 'bushes')} are scattered on the bare land ."]
    if s.n("building"):
        out += [f"{s.buildings()} {'is' if s.n('building') == 1 else 'are'} on the bare land ."]
    if s.has("rocks", 0.5):
        out += ["some rocks are on the bare land ."]
    return out


def _beach(s: _Say) -> list[str]:
    sea = s.pick("sea", "ocean")
    out = [f"the {sea} is {s.where('water')} and the beach is beside it .", f"waves hit the beach {s.where('water')} .",
           f"a beach is between the {sea} and the {s.ground() if s.ground() != 'bare land' else 'land'} .",
           f"a piece of yellow sand is next to the {s.pick('blue', '')} {sea} .".replace("  ", " ")]
    if s.n("building"):
        out += [f"{s.buildings()} are near the beach .", f"{s.buildings()} are beside a beach ."]
    if s.n("tree"):
        out += [f"{s.trees()} are beside a beach .", f"a beach with {s.trees()} and the {sea} ."]
    return out


def _park(s: _Say) -> list[str]:
    out = ["many green trees and lawns are in the park ." if s.n("tree") else "green lawns are in the park .",
           f"it is a park with {s.trees() if s.n('tree') else 'green lawns'} .",
           f"there are {s.trees() if s.n('tree') else 'green lawns'} in this park .",
           f"a park with green {s.pick('lawns', 'grass', 'meadows')} and {s.trees() if s.n('tree') else 'some paths'} ."
           if s.n("tree") or s.has("paved-area", 0.5) else "a park with green lawns ."]
    if s.n("water"):
        out += [f"a park with {s.trees() if s.n('tree') else 'lawns'} and a pond .",
                f"there is a pond {s.where('water')} of the park ."]
    if s.has("paved-area", 0.5) or s.has("gravel", 0.5):
        out += ["some paths go through the park .", f"{s.trees() if s.n('tree') else 'lawns'} and some paths are in the park ."]
    if s.n("building"):
        out += [f"{s.buildings()} {'is' if s.n('building') == 1 else 'are'} in the park ."]
    return out


def _playground(s: _Say) -> list[str]:
    out = ["a playground with a green football field inside a red track .",
           f"a playground is {s.where('grass') if s.cells.get('grass') != 'center' else 'in the middle'} .",
           "a running track encircles a green field .", "there is a playground with a track .",
           f"a {s.pick('red', 'oval', 'standard')} track {s.pick('surrounds', 'is around')} a green football field ."]
    if s.n("tree"):
        out += [f"a playground is surrounded by {s.trees()} .", f"{s.trees()} are around a playground ."]
    if s.n("building"):
        out += [f"{s.buildings()} are around a playground .", f"a playground is near {s.buildings()} ."]
    return out


def _industrial(s: _Say) -> list[str]:
    big = s.pick("large", "big", "")
    out = [f"{s.qty('building', 'factory', 'factories', big)} {'is' if s.n('building') == 1 else 'are'} in the industrial area .".replace("  ", " "),
           f"an industrial area with {s.buildings()} and a road .",
           f"{s.qty('building', 'factory', 'factories')} {'is' if s.n('building') == 1 else 'are'} near a road ."]
    if s.n("car"):
        out += [f"{s.qty('car', 'car', 'cars')} are parked beside the factories ."]
    if s.n("tree"):
        out += [f"{s.trees()} are near the factories ."]
    return out


WRITERS = {
    "bareland": _bareland, "beach": _beach, "denseresidential": _denseresidential, "farmland": _farmland,
    "forest": _forest, "industrial": _industrial, "park": _park, "parking": _parking, "playground": _playground,
    "pond": _pond, "river": _river, "sparseresidential": _sparseresidential,
}


def write_captions(facts: dict, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` RSICD-style captions for a scene: templates of its category drawn with replacement, each re-worded."""
    writer = WRITERS[facts["category"]]
    out = []
    for _ in range(n):
        options = writer(_Say(facts, rng))  # re-drawn each time: synonyms and counts words vary
        cap = re.sub(r"\s+", " ", options[int(rng.integers(0, len(options)))]).strip()
        out.append(_agree(cap))
    return out


def _agree(caption: str) -> str:
    """Singular subject, singular verb: "a tree are beside ..." -> "a tree is beside ..."."""
    m = re.match(r"^(an? [a-z ]+?) are ", caption)
    if m and " and " not in m.group(1) and not m.group(1).startswith(("a lot of", "a few")):
        caption = f"{m.group(1)} is {caption[m.end():]}"
    return caption


def tokens(caption: str) -> list[str]:
    """RSICD tokens: lower-case words, punctuation dropped."""
    return re.findall(r"[a-z0-9']+", caption.lower())
