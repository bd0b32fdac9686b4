"""CIFAR-10-C: the 15 benchmark corruptions of Hendrycks & Dietterich (ICLR 2019) at 5 severities.

Each corruption follows the authors' `make_cifar_c.py` (github.com/hendrycks/robustness,
ImageNet-C/create_c/) with its CIFAR parameters per severity (PARAMS, copied from its `c = [...]`
lists), on images scaled to [0, 1] as it does, and returns 0..255 floats that `corrupt` truncates to
uint8 as its `np.uint8(...)` does. Where the reference calls ImageMagick (motion blur, snow's flakes)
or reads photographs (frost), the equivalent here is numpy / scipy / Pillow; README lists what differs.
Work is vectorised over the batch (N, H, W, 3) except JPEG and pixelate, which are Pillow's own
per-image codecs; every random draw comes from the Generator passed in.
"""
import io

import numpy as np
from PIL import Image
from scipy import ndimage

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog"),
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
NAMES = tuple(name for names in FAMILIES.values() for name in names)  # the paper's order
FAMILY = {name: family for family, names in FAMILIES.items() for name in names}
SEVERITIES = (1, 2, 3, 4, 5)
SIDE_PX = 32  # the reference's CIFAR parameters are in pixels of 32 x 32 images

# make_cifar_c.py's CIFAR parameters, severity 1..5, and what each number is.
PARAMS = {
    "gaussian_noise": [0.04, 0.06, .08, .09, .10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [.01, .02, .03, .05, .07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [.05, .1, .15, .2, .3],
    "contrast": [.75, .5, .4, .3, 0.15],
    "elastic_transform": [(SIDE_PX * 0, SIDE_PX * 0, SIDE_PX * 0.08), (SIDE_PX * 0.05, SIDE_PX * 0.2, SIDE_PX * 0.07),
                          (SIDE_PX * 0.08, SIDE_PX * 0.06, SIDE_PX * 0.06), (SIDE_PX * 0.1, SIDE_PX * 0.04, SIDE_PX * 0.05),
                          (SIDE_PX * 0.1, SIDE_PX * 0.03, SIDE_PX * 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}
MEANING = {
    "gaussian_noise": "standard deviation of the added noise (intensity in [0, 1])",
    "shot_noise": "Poisson rate per unit intensity (fewer photons: noisier)",
    "impulse_noise": "share of channel values set to 0 or 1 (salt and pepper)",
    "defocus_blur": "disk radius (px), Gaussian anti-alias sigma of the disk (px)",
    "glass_blur": "Gaussian sigma (px), max pixel displacement (px), iterations",
    "motion_blur": "ImageMagick radius (px), sigma (px); angle uniform in [-45, 45) degrees",
    "zoom_blur": "largest zoom; the image is averaged with its zooms 1.00, 1.01, ... up to it",
    "snow": "flake-field mean, std, zoom, threshold, motion-blur radius (px), sigma (px), image weight",
    "frost": "image weight, frost texture weight",
    "fog": "fog strength, plasma-fractal roughness decay",
    "brightness": "added to the HSV value",
    "contrast": "factor on each channel's deviation from its mean",
    "elastic_transform": "displacement alpha (px), its smoothing sigma (px), affine jitter (px)",
    "pixelate": "downscale factor before upscaling back (Pillow BOX)",
    "jpeg_compression": "JPEG quality (Pillow)",
}


# Helpers shared by several corruptions.

def gaussian_filter(x, sigma, mode="nearest", truncate=4.0):
    """Blur the two spatial axes of (N, H, W[, C]) as skimage.filters.gaussian does (channels apart)."""
    if sigma == 0:
        return x
    return ndimage.gaussian_filter(x, (0, sigma, sigma, 0)[:x.ndim], mode=mode, truncate=truncate)


def zoom_matrix(side, factor):
    """(side, side) weights of the reference's clipped zoom along one axis: the centre ceil(side / factor)
    pixels zoomed by scipy.ndimage.zoom(order=1) (output i samples input i (in - 1) / (out - 1)), then the
    middle `side` outputs kept."""
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    zoomed = int(round(crop * factor))
    trim = (zoomed - side) // 2
    pos = np.arange(trim, trim + side) * (crop - 1) / (zoomed - 1)
    low = np.minimum(np.floor(pos).astype(int), crop - 2)
    m = np.zeros((side, side))
    m[np.arange(side), top + low] = 1 - (pos - low)
    m[np.arange(side), top + low + 1] += pos - low
    return m


def clipped_zoom(x, factor):
    """Each (N, H, H, C) image's centre zoomed by `factor` (bilinear), cropped back to H x H."""
    m = zoom_matrix(x.shape[1], factor)
    return np.einsum("ij,njkc,lk->nilc", m, x, m, optimize=True)


def motion_blur_layer(x, radius, sigma, angles_deg):
    """ImageMagick's MotionBlurImage on (N, H, W, C): each pixel becomes a one-sided Gaussian-weighted
    mean of the `2 ceil(radius) + 1` pixels behind it along the angle (edge pixels repeated)."""
    width = int(2 * np.ceil(radius) + 1)
    taps = np.arange(width)
    kernel = np.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    angle = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[:, None]
    # ImageMagick rounds each tap's offset as ceil(v - 0.5).
    d_col = np.ceil(taps * np.cos(angle) - 0.5).astype(int)
    d_row = np.ceil(taps * np.sin(angle) - 0.5).astype(int)
    n, h, w = x.shape[:3]
    rows, cols, batch = np.arange(h)[None, :, None], np.arange(w)[None, None, :], np.arange(n)[:, None, None]
    out = np.zeros(x.shape, np.float64)
    for i in taps:
        r = np.clip(rows + d_row[:, i, None, None], 0, h - 1)
        c = np.clip(cols + d_col[:, i, None, None], 0, w - 1)
        out += kernel[i] * x[batch, r, c]
    return out


def border_index(i, size, mode):
    """Integer positions outside [0, size) folded back in: "reflect" repeats the edge pixel
    (scipy's reflect), "reflect101" does not (OpenCV's BORDER_REFLECT_101)."""
    if mode == "reflect":
        i = np.where(i < 0, -i - 1, i)
        i = np.where(i >= size, 2 * size - 1 - i, i)
    else:
        i = np.abs(i)
        i = np.where(i >= size, 2 * (size - 1) - i, i)
    return np.clip(i, 0, size - 1)


def bilinear(x, rows, cols, mode):
    """Sample (N, H, W, C) images at float positions rows, cols (N, H, W), bilinearly."""
    n, h, w = x.shape[:3]
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    batch = np.arange(n)[:, None, None]

    def at(r, c):
        return x[batch, border_index(r, h, mode), border_index(c, w, mode)]
    return ((1 - fr) * ((1 - fc) * at(r0, c0) + fc * at(r0, c0 + 1))
            + fr * ((1 - fc) * at(r0 + 1, c0) + fc * at(r0 + 1, c0 + 1)))


def disk_kernel(radius, alias_sigma):
    """The reference's anti-aliased disk: a 17 x 17 (or wider) disk, normalised, then OpenCV's 3 x 3
    (5 x 5 beyond radius 8) Gaussian blur; returned trimmed to its non-zero centre."""
    half = max(8, int(radius))
    grid = np.arange(-half, half + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    k = 3 if radius <= 8 else 5
    taps = np.arange(k) - k // 2
    g = np.exp(-taps ** 2 / (2 * alias_sigma ** 2))
    g /= g.sum()
    for axis in (0, 1):
        disk = ndimage.correlate1d(disk, g, axis=axis, mode="mirror")
    reach = int(np.abs(np.argwhere(disk != 0) - half).max())  # zeros beyond it contribute nothing
    return disk[half - reach:half + reach + 1, half - reach:half + reach + 1]


def plasma_fractal(n, rng, decay, size=SIDE_PX):
    """n diamond-square height maps in [0, 1], as the reference's plasma_fractal (batched)."""
    maps = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def wibbled_mean(total):
        # The reference's noise is wibble * U(-wibble, wibble): its scale decays as wibble squared.
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)
    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        square = corners + np.roll(corners, -1, axis=1)
        maps[:, half::step, half::step] = wibbled_mean(square + np.roll(square, -1, axis=2))
        centres, corners = maps[:, half::step, half::step], maps[:, 0::step, 0::step]
        maps[:, 0::step, half::step] = wibbled_mean(centres + np.roll(centres, 1, axis=1)
                                                    + corners + np.roll(corners, -1, axis=2))
        maps[:, half::step, 0::step] = wibbled_mean(centres + np.roll(centres, 1, axis=2)
                                                    + corners + np.roll(corners, -1, axis=1))
        step, wibble = half, wibble / decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def frost_textures(rng, count=5, size=192):
    """`count` seeded RGB ice textures in [0, 1], (count, size, size, 3), standing in for the reference's
    five frost photographs (scaled to a fifth, about this size): hexagonal ice needles with side branches
    over a smooth uneven haze, bluish white."""
    textures = np.zeros((count, size, size))
    for t in range(count):
        ice = np.zeros((size, size))
        for _ in range(size * size // 80):
            start = rng.uniform(0, size, 2)
            angle = np.deg2rad(60 * rng.integers(6) + rng.normal(0, 8))  # ice grows at multiples of 60 degrees
            length = rng.exponential(10)
            stem = start + np.outer(np.arange(0, length, 0.5), [np.sin(angle), np.cos(angle)])
            branches = [stem]
            for at in stem[::max(1, len(stem) // 3)][1:]:
                side = angle + np.deg2rad(60) * rng.choice([-1, 1])
                branches.append(at + np.outer(np.arange(0, length / 3, 0.5), [np.sin(side), np.cos(side)]))
            points = np.concatenate(branches).astype(int) % size
            np.add.at(ice, (points[:, 0], points[:, 1]), rng.uniform(0.05, 0.2))
        ice = ndimage.gaussian_filter(ice, 0.6, mode="wrap")
        haze = ndimage.gaussian_filter(rng.random((size, size)), 8, mode="wrap")
        haze = (haze - haze.min()) / (haze.max() - haze.min())
        textures[t] = np.clip(0.2 + 0.3 * haze + 2 * ice, 0, 1)
    return textures[..., None] * np.array([0.85, 0.92, 1.0])


# The corruptions: (N, H, W, 3) floats in [0, 1] (or uint8 for the Pillow codecs) -> 0..255 floats.

def gaussian_noise(x, c, rng):
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, c, rng):
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, c, rng):
    # skimage's random_noise(mode="s&p", amount=c): each channel value is hit with probability c,
    # then set to 1 or 0 with equal odds.
    hit = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(np.float64), x) * 255


def defocus_blur(x, c, rng):
    kernel = disk_kernel(*c)
    return np.clip(ndimage.correlate(x, kernel[None, :, :, None], mode="mirror"), 0, 1) * 255


def glass_blur(x, c, rng):
    sigma, delta, iterations = c
    x = np.uint8(gaussian_filter(x, sigma) * 255)
    n, h, w = x.shape[:3]
    # The reference walks pixels (h, w) from the bottom-right to (delta + 1, delta + 1) and "swaps" each with
    # (h + dy, w + dx), dy, dx uniform in [-delta, delta). Its tuple swap of numpy views copies instead: each
    # pixel takes its neighbour's value and the neighbour keeps its own. With delta 1 (every CIFAR severity)
    # the neighbour is always one not yet visited, so the walk is this one gather from the unchanged image.
    assert delta == 1, "the vectorised walk is exact for delta 1 only"
    rows, cols = np.mgrid[delta + 1:h, delta + 1:w]
    batch = np.arange(n)[:, None, None]
    for _ in range(iterations):
        dy, dx = rng.integers(-delta, delta, (2, n, *rows.shape))
        x[:, delta + 1:, delta + 1:] = x[batch, rows + dy, cols + dx]
    return np.clip(gaussian_filter(x / 255, sigma), 0, 1) * 255


def motion_blur(x, c, rng):
    blurred = motion_blur_layer(x, c[0], c[1], rng.uniform(-45, 45, len(x)))
    return np.round(np.clip(blurred, 0, 1) * 255)  # ImageMagick rounds to 8 bits; the truncation then keeps it


def zoom_blur(x, c, rng):
    factors = np.arange(1, c, 0.01)  # as the reference's np.arange(1, 1.06, 0.01): 1.00 .. 1.06, 7 zooms
    n, h, w, ch = x.shape
    # The mean of the image and its zooms is one linear map of the flattened image: one matrix product.
    op = (np.eye(h * w) + sum(np.kron(zoom_matrix(h, f), zoom_matrix(w, f)) for f in factors)) / (len(factors) + 1)
    out = x.transpose(0, 3, 1, 2).reshape(-1, h * w) @ op.T
    return np.clip(out.reshape(n, ch, h, w).transpose(0, 2, 3, 1), 0, 1) * 255


def snow(x, c, rng):
    mean, std, zoom, threshold, radius, sigma, keep = c
    flakes = clipped_zoom(rng.normal(mean, std, (*x.shape[:3], 1)), zoom)
    flakes[flakes < threshold] = 0
    flakes = np.uint8(np.clip(flakes, 0, 1) * 255) / 255  # the reference passes the layer through an 8-bit PNG
    flakes = np.round(motion_blur_layer(flakes, radius, sigma, rng.uniform(-135, -45, len(x))) * 255) / 255
    grey = x @ np.array([0.299, 0.587, 0.114])  # OpenCV's RGB2GRAY weights
    x = keep * x + (1 - keep) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, 2, axes=(1, 2)), 0, 1) * 255


def frost(x, c, rng, textures):
    n, h, w = x.shape[:3]
    pick = rng.integers(len(textures), size=n)
    top = rng.integers(0, textures.shape[1] - h, n)
    left = rng.integers(0, textures.shape[2] - w, n)
    rows, cols = top[:, None, None] + np.arange(h)[:, None], left[:, None, None] + np.arange(w)
    crops = textures[pick[:, None, None], rows, cols]
    return np.clip(c[0] * x * 255 + c[1] * crops * 255, 0, 255)


def fog(x, c, rng):
    strength, decay = c
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + strength * plasma_fractal(len(x), rng, decay)[:, :x.shape[1], :x.shape[2], None]
    return np.clip(x * peak / (peak + strength), 0, 1) * 255


def brightness(x, c, rng):
    # skimage's HSV round trip with V raised by c: at fixed hue and saturation RGB scales with V,
    # and a black pixel (V = 0, saturation 0) becomes grey.
    value = x.max(axis=-1, keepdims=True)
    raised = np.clip(value + c, 0, 1)
    return np.clip(np.where(value > 0, x * raised / np.where(value > 0, value, 1), raised), 0, 1) * 255


def contrast(x, c, rng):
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def affine_from_points(src, dst):
    """(N, 2, 3) matrices taking the three (x, y) points `src` to `dst` (N, 3, 2), as cv2.getAffineTransform."""
    a = np.concatenate([src, np.ones((*src.shape[:-1], 1))], axis=-1)  # (N, 3, 3)
    return np.linalg.solve(a, dst).transpose(0, 2, 1)


def elastic_transform(x, c, rng):
    alpha, sigma, jitter = c
    n, h, w = x.shape[:3]
    centre, reach = np.float32([h, w]) // 2, min(h, w) // 3
    src = np.float32([centre + reach, [centre[0] + reach, centre[1] - reach], centre - reach])
    dst = src + rng.uniform(-jitter, jitter, (n, *src.shape))
    m = affine_from_points(np.broadcast_to(src, dst.shape).astype(np.float64), dst)
    # cv2.warpAffine samples the source at the inverse map of each output pixel (x = column, y = row).
    full = np.concatenate([m, np.broadcast_to([0, 0, 1.0], (n, 1, 3))], axis=1)
    inv = np.linalg.inv(full)[:, :2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    src_x = inv[:, 0, 0, None, None] * xs + inv[:, 0, 1, None, None] * ys + inv[:, 0, 2, None, None]
    src_y = inv[:, 1, 0, None, None] * xs + inv[:, 1, 1, None, None] * ys + inv[:, 1, 2, None, None]
    x = bilinear(x, src_y, src_x, "reflect101")
    dx = gaussian_filter(rng.uniform(-1, 1, (n, h, w)), sigma, mode="reflect", truncate=3) * alpha
    dy = gaussian_filter(rng.uniform(-1, 1, (n, h, w)), sigma, mode="reflect", truncate=3) * alpha
    return np.clip(bilinear(x, ys + dy, xs + dx, "reflect"), 0, 1) * 255


def pixelate(x, c, rng):
    h, w = x.shape[1:3]
    small = (int(w * c), int(h * c))
    return np.stack([np.asarray(Image.fromarray(im).resize(small, Image.BOX).resize((w, h), Image.BOX))
                     for im in x]).astype(np.float64)


def jpeg_compression(x, c, rng):
    out = np.empty(x.shape, np.float64)
    for i, im in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=c)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return out


UINT8_INPUT = {"pixelate", "jpeg_compression"}  # Pillow codecs work on the 8-bit image itself


def rng_for(seed, name, severity):
    """The Generator of one corruption at one severity: independent of which other corruptions run."""
    return np.random.default_rng([seed, NAMES.index(name), severity])


def corrupt(x, name, severity, rng, textures=None):
    """uint8 (N, H, W, 3) images under corruption `name` at `severity` (1..5), uint8 like the reference's
    np.uint8(...): values truncated, not rounded. Frost needs `textures` (frost_textures)."""
    c = PARAMS[name][severity - 1]
    fn = globals()[name]
    if name == "frost":
        out = fn(x / 255, c, rng, textures)
    else:
        out = fn(x if name in UINT8_INPUT else x / 255, c, rng)
    return np.uint8(np.clip(out, 0, 255))
