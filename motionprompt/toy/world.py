"""A seeded procedural video world: coloured shapes with physically smooth motion, and captions.

Every clip is a pure function of (spec, seed): the same seed gives the same scene, caption and pixels
on any machine, so training data never has to be stored and held-out sets are just seed ranges.
Objects are saturated colours on low-saturation backgrounds, so ``truth.py`` can find them again in a
generated clip by colour alone. Positions and speeds are fractions of the frame, so a scene renders the
same at 32 or 64 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

# Hues far enough apart (>= 25 degrees) for a hue classifier; all fully saturated.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (226, 40, 40),
    "orange": (242, 138, 28),
    "yellow": (232, 214, 36),
    "green": (40, 188, 72),
    "blue": (48, 92, 236),
    "purple": (156, 58, 214),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star")
TEXTURES = ("solid", "striped", "dotted")
BACKGROUNDS = ("plain", "gradient", "checkered", "textured")
MOTIONS = ("moving", "accelerating", "bouncing", "spinning")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SPEEDS: dict[str, float] = {"slowly": 0.02, "quickly": 0.04}  # fraction of the frame width per frame
CAMERAS = ("still", "panning left", "panning right", "zooming in", "zooming out")
RADIUS = (0.13, 0.17)  # object radius, fraction of the frame
EXTENT = 1.4  # farthest point of any shape, in radii (the triangle's corners)
PAN_SPEED = 0.015  # fraction of the frame per frame
ZOOM_RATE = 0.02  # relative scale change per frame
SPIN_RATE = {"slowly": 0.12, "quickly": 0.3}  # radians per frame
CENTRED_JITTER = 0.08  # fraction of the frame


@dataclass(frozen=True)
class WorldSpec:
    """Which parts of the world a clip may draw from. ``LEVELS`` names the ones we use."""

    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    textures: tuple[str, ...] = TEXTURES
    backgrounds: tuple[str, ...] = BACKGROUNDS
    motions: tuple[str, ...] = MOTIONS
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    speeds: tuple[str, ...] = tuple(SPEEDS)
    cameras: tuple[str, ...] = CAMERAS
    max_objects: int = 2
    frames: int = 16
    size: int = 32
    # "free": a straight path starts anywhere that keeps the object in view; "centred": its midpoint and
    # its line lie within ``CENTRED_JITTER`` of the frame's centre, so the caption's direction decides
    # where the object is in every frame (a strong signal for a small model) and not only how it moves
    layout: str = "free"

    def vocabulary(self) -> list[str]:
        """Every word a caption of this spec can contain (for tokenizer collision checks)."""
        parts = [*self.shapes, *self.colours, *self.textures, *self.backgrounds, *self.motions,
                 *self.directions, *self.speeds, *self.cameras, "a", "an", "and", "on", "background", "camera", ","]
        return sorted({w for p in parts for w in p.replace(",", " , ").split()})


LEVELS: dict[str, WorldSpec] = {
    # what the shipped toy model is trained on: one solid object, constant velocity, plain background
    "toy": WorldSpec(shapes=("circle", "square", "triangle"), colours=("red", "yellow", "green", "blue"),
                     textures=("solid",), backgrounds=("plain",), motions=("moving",), cameras=("still",),
                     max_objects=1, layout="centred"),
    # everything the renderer can do
    "full": WorldSpec(),
}


@dataclass(frozen=True)
class WorldObject:
    shape: str
    colour: str
    texture: str
    motion: str
    direction: str
    speed: str
    x0: float  # start centre, fraction of the frame (world coordinates)
    y0: float
    radius: float
    angle0: float
    spin: float  # radians per frame (0 unless spinning)


@dataclass(frozen=True)
class Scene:
    seed: int
    background: str
    tone: float  # background grey level in [0, 1]
    tint: tuple[float, float, float]
    bg_params: tuple[float, ...]
    camera: str
    objects: tuple[WorldObject, ...] = field(default_factory=tuple)
    frames: int = 16

    @property
    def caption(self) -> str:
        return caption(self)


# ------------------------------------------------------------------------------------------ sampling
def sample_scene(spec: WorldSpec, seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    n_obj = 1 if spec.max_objects == 1 else int(rng.integers(1, spec.max_objects + 1))
    objects = []
    for _ in range(n_obj):
        shape, colour = pick(spec.shapes), pick([c for c in spec.colours if c not in {o.colour for o in objects}])
        texture, motion = pick(spec.textures), pick(spec.motions)
        if motion == "spinning" and shape == "circle" and texture == "solid":
            texture = pick([t for t in spec.textures if t != "solid"] or ["solid"])
            if texture == "solid":  # a plain spinning disc shows no motion: spin something else
                shape = pick([s for s in spec.shapes if s != "circle"] or ["circle"])
        direction, speed = pick(spec.directions), pick(spec.speeds)
        radius = float(rng.uniform(*RADIUS))
        x0, y0 = _start(rng, motion, direction, SPEEDS[speed], radius, spec.frames, spec.layout)
        spin = SPIN_RATE[speed] * (1 if rng.random() < 0.5 else -1) if motion == "spinning" else 0.0
        objects.append(WorldObject(shape, colour, texture, motion, direction, speed, x0, y0, radius,
                                   float(rng.uniform(0, 2 * math.pi)), spin))
    tint = tuple(float(v) for v in rng.uniform(-0.04, 0.04, 3))
    bg_params = tuple(float(v) for v in rng.uniform(0, 1, 8))
    return Scene(seed, pick(spec.backgrounds), float(rng.uniform(0.3, 0.62)), tint, bg_params, pick(spec.cameras),
                 tuple(objects), spec.frames)


def _start(rng, motion: str, direction: str, speed: float, radius: float, frames: int,
           layout: str = "free") -> tuple[float, float]:
    """A start that keeps the whole object inside the frame for the whole clip (bouncing reflects).

    A fast object's travel (0.6 of the frame) is longer than the room a large triangle has, so its start is
    pinned to the edge and its far corners may leave the frame on the last frames: the same in both layouts.
    """
    reach = EXTENT * radius + 0.01  # the farthest point of any shape from its centre
    lo, hi = reach, 1 - reach
    pos = [float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))]
    if motion in ("moving", "accelerating"):
        dx, dy = DIRECTIONS[direction]
        travel = speed * (frames - 1)
        if layout == "centred":
            mid = 0.5 + rng.uniform(-CENTRED_JITTER, CENTRED_JITTER, 2)
            return float(mid[0] - dx * travel / 2), float(mid[1] - dy * travel / 2)
        for axis, d in ((0, dx), (1, dy)):
            if d > 0:
                pos[axis] = float(rng.uniform(lo, max(lo, hi - travel)))
            elif d < 0:
                pos[axis] = float(rng.uniform(min(hi, lo + travel), hi))
    return pos[0], pos[1]


# ------------------------------------------------------------------------------------------ motion
def object_path(obj: WorldObject, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """World-coordinate centres [F, 2] and angles [F] of one object."""
    t = np.arange(frames, dtype=np.float64)
    dx, dy = DIRECTIONS[obj.direction]
    v = SPEEDS[obj.speed]
    if obj.motion == "moving":
        s = v * t
    elif obj.motion == "accelerating":  # from a quarter of v to 1.75 v: same travel as constant v
        a = 1.5 * v / max(frames - 1, 1)
        s = 0.25 * v * t + 0.5 * a * t**2
    elif obj.motion == "bouncing":
        s = 1.5 * v * t
    else:  # spinning in place
        s = np.zeros_like(t)
    x, y = obj.x0 + dx * s, obj.y0 + dy * s
    if obj.motion == "bouncing":
        lo, hi = obj.radius, 1 - obj.radius
        x, y = _reflect(x, lo, hi), _reflect(y, lo, hi)
    return np.stack([x, y], axis=1), obj.angle0 + obj.spin * t


def _reflect(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def camera_path(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Camera offset [F, 2] (world units) and zoom [F] per frame."""
    t = np.arange(scene.frames, dtype=np.float64)
    offset = np.zeros((scene.frames, 2))
    zoom = np.ones(scene.frames)
    if scene.camera == "panning left":
        offset[:, 0] = -PAN_SPEED * t
    elif scene.camera == "panning right":
        offset[:, 0] = PAN_SPEED * t
    elif scene.camera == "zooming in":
        zoom = 1 + ZOOM_RATE * t
    elif scene.camera == "zooming out":
        zoom = 1 + ZOOM_RATE * (scene.frames - 1 - t)
    return offset, zoom


def to_screen(world_xy: np.ndarray, offset: np.ndarray, zoom: np.ndarray) -> np.ndarray:
    """World coordinates [F, 2] -> screen fractions [F, 2] for the camera of each frame."""
    return (world_xy - offset - 0.5) * zoom[:, None] + 0.5


def screen_paths(scene: Scene, size: int) -> np.ndarray:
    """Ground-truth object centres on screen, in pixels: [n_objects, F, 2] (x, y)."""
    offset, zoom = camera_path(scene)
    return np.stack([to_screen(object_path(o, scene.frames)[0], offset, zoom) * size for o in scene.objects])


# ------------------------------------------------------------------------------------------ rendering
def render(scene: Scene, size: int = 32) -> np.ndarray:
    """uint8 [F, H, W, 3]."""
    frames = scene.frames
    offset, zoom = camera_path(scene)
    centres = (np.arange(size) + 0.5) / size
    sx, sy = np.meshgrid(centres, centres)  # [H, W] screen fractions
    # world coordinates of every pixel of every frame: [F, H, W]
    wx = (sx[None] - 0.5) / zoom[:, None, None] + 0.5 + offset[:, 0, None, None]
    wy = (sy[None] - 0.5) / zoom[:, None, None] + 0.5 + offset[:, 1, None, None]
    img = _background(scene, wx, wy)
    px_per_world = size * zoom[:, None, None]
    for obj in scene.objects:
        path, angle = object_path(obj, frames)
        qx = wx - path[:, 0, None, None]
        qy = wy - path[:, 1, None, None]
        c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        ux, uy = (c * qx + s * qy) / obj.radius, (-s * qx + c * qy) / obj.radius  # object frame, unit radius
        dist = _sdf(obj.shape, ux, uy) * obj.radius * px_per_world  # ~ signed distance in pixels
        alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        colour = np.asarray(COLOURS[obj.colour], dtype=np.float64) / 255.0
        shade = _texture(obj.texture, ux, uy)[..., None]
        img = img * (1 - alpha) + alpha * colour * shade
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _background(scene: Scene, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    p = scene.bg_params
    base = np.full(wx.shape, scene.tone)
    if scene.background == "gradient":
        ang = 2 * math.pi * p[0]
        base = base + 0.22 * (math.cos(ang) * (wx - 0.5) + math.sin(ang) * (wy - 0.5))
    elif scene.background == "checkered":
        period = 0.18 + 0.1 * p[1]
        cells = np.floor(wx / period) + np.floor(wy / period)
        base = base + 0.08 * (np.mod(cells, 2) - 0.5)
    elif scene.background == "textured":
        for k in range(3):
            fx, fy = (p[2 * k] - 0.5) * 16, (p[2 * k + 1] - 0.5) * 16
            base = base + 0.045 * np.sin(2 * math.pi * (fx * wx + fy * wy) / 2 + 6.28 * p[6 + k % 2])
    tint = np.asarray(scene.tint)
    return np.clip(base[..., None] + tint, 0.0, 1.0)


def _sdf(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance in units of the object radius (negative inside); areas are roughly equal."""
    if shape == "circle":
        return np.hypot(x, y) - 1.0
    if shape == "square":
        qx, qy = np.abs(x) - 0.86, np.abs(y) - 0.86
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "diamond":
        return (np.abs(x) + np.abs(y) - 1.22) / math.sqrt(2)
    if shape == "triangle":  # equilateral, inradius 0.7, apex up (screen y grows downwards)
        k = math.sqrt(3.0) / 2
        return np.maximum.reduce([y, k * x - 0.5 * y, -k * x - 0.5 * y]) - 0.7
    if shape == "star":
        rad = np.hypot(x, y)
        phi = np.arctan2(y, x)
        return rad - (0.88 + 0.32 * np.cos(5 * phi))
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Brightness factor on the object (hue is kept, so the colour mask still finds it)."""
    if texture == "striped":
        return 0.72 + 0.28 * np.tanh(4 * np.sin(2.6 * math.pi * x))
    if texture == "dotted":
        dots = np.cos(2.2 * math.pi * x) * np.cos(2.2 * math.pi * y)
        return 1.0 - 0.4 * np.clip(dots * 3, 0, 1)
    return np.ones_like(x)


# ------------------------------------------------------------------------------------------ captions
def caption(scene: Scene) -> str:
    text = " and ".join(_object_phrase(o) for o in scene.objects)
    if scene.background != "plain":
        text += f" on a {scene.background} background"
    if scene.camera != "still":
        text += f", camera {scene.camera}"
    return text


def _object_phrase(o: WorldObject) -> str:
    words = ["an" if o.texture == "solid" and o.colour[0] in "aeiou" else "a"]
    if o.texture != "solid":
        words.append(o.texture)
    words += [o.colour, o.shape, o.motion]
    if o.motion != "spinning":
        words.append(o.direction)
    words.append(o.speed)
    return " ".join(words)


def parse_caption(text: str) -> list[dict]:
    """The inverse of ``caption`` for the object phrases (used by evaluation and tests)."""
    head = text.split(" on a ")[0].split(", camera")[0]
    found = []
    for phrase in head.split(" and "):
        item = {"texture": "solid"}
        item.update({_FIELD_OF_WORD[w]: w for w in phrase.split() if w in _FIELD_OF_WORD})
        found.append(item)
    return found


_FIELD_OF_WORD = {w: key for key, words in (("colour", COLOURS), ("shape", SHAPES), ("texture", TEXTURES),
                                                ("motion", MOTIONS), ("direction", DIRECTIONS), ("speed", SPEEDS))
                  for w in words}


def clip(spec: WorldSpec, seed: int, size: int | None = None) -> tuple[np.ndarray, str, Scene]:
    scene = sample_scene(spec, seed)
    return render(scene, size or spec.size), scene.caption, scene


def with_caption(spec: WorldSpec, seed: int, **fixed) -> Scene:
    """A scene whose single object has the given attributes (e.g. colour="red", direction="left")."""
    scene = sample_scene(replace(spec, max_objects=1), seed)
    obj = replace(scene.objects[0], **fixed)
    if {"motion", "direction", "speed", "radius"} & set(fixed):
        rng = np.random.default_rng(seed + 7919)
        x0, y0 = _start(rng, obj.motion, obj.direction, SPEEDS[obj.speed], obj.radius, spec.frames, spec.layout)
        obj = replace(obj, x0=x0, y0=y0)
    return replace(scene, objects=(obj,))
