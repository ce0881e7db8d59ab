"""The labels plot of a data set (``detkit-check-data --plot``, and ``labels.png`` at the start of
training): what the cleaned index holds, drawn before a run is spent on it. matplotlib on first
use (``detcore.files.pyplot``), the PNG written atomically."""
import numpy as np

from detcore.files import pyplot, save_png


def plot_labels(class_names, counts, boxes, path, title=None, bins=None):
    """The labels plot of a data set (``detkit-check-data --plot``): instances per class (bars),
    where box centres fall (2-D histogram of x, y normalised by the image size, drawn as the
    image is: y down) and box shapes (2-D histogram of width and height, normalised). Lopsided
    classes, objects always in one place or sizes the input resolution cannot resolve show here
    before a run is spent on them.

    ``counts`` [K] instances per class; ``boxes`` [M, 4] normalised (cx, cy, w, h), each in [0, 1].
    ``bins`` per axis defaults to 1.5 sqrt(M) within [10, 50]: cells coarse enough that a small set
    does not scatter into single boxes, fine enough at COCO scale. Empty cells stay white and the
    colour scale is logarithmic, so a lone box shows as clearly as the dense middle of COCO."""
    from pathlib import Path

    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plt = pyplot()
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    k = len(class_names)
    bins = bins or int(np.clip(1.5 * np.sqrt(len(boxes)), 10, 50))
    if k <= 20:                        # one row: bars, centres, shapes
        fig, (ax_cls, ax_xy, ax_wh) = plt.subplots(1, 3, figsize=(15, 5))
    else:                              # many classes (COCO's 80): the bars get a row of their own
        fig = plt.figure(figsize=(max(12.0, 3 + 0.16 * k), 10))
        grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.3])
        ax_cls = fig.add_subplot(grid[0, :])
        ax_xy, ax_wh = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    ax_cls.bar(range(k), counts, color="C0")
    ax_cls.set_xticks(range(k), [n if len(n) <= 14 else n[:13] + '~' for n in class_names],
                      rotation=90 if k > 8 else 0, fontsize=8 if k > 20 else 10)
    if k <= 20:
        for i, c in enumerate(counts.tolist()):
            ax_cls.text(i, c, str(c), ha="center", va="bottom", fontsize=8)
    ax_cls.set(ylabel="instances", title=f"instances per class ({int(counts.sum())} in all)")
    ax_cls.set_ylim(0, max(int(counts.max(initial=0)), 1) * 1.1)
    ax_cls.set_xlim(-0.6, k - 0.4)
    panels = ((ax_xy, boxes[:, 0], boxes[:, 1], "centre x / image width", "centre y / image height",
               "box centres"),
              (ax_wh, boxes[:, 2], boxes[:, 3], "box width / image width", "box height / image height",
               "box width and height"))
    for ax, u, v, xlabel, ylabel, name in panels:
        if len(boxes):
            *_, image = ax.hist2d(u, v, bins=bins, range=[[0, 1], [0, 1]], cmap="viridis", cmin=1,
                                  norm=LogNorm())
            bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="boxes per cell (log scale)")
            plain = FuncFormatter(lambda value, _: f"{value:g}")      # 20, not 2 x 10^1
            bar.ax.yaxis.set_major_formatter(plain)
            # under one decade there is no major tick to read: label the minor ones instead
            narrow = image.norm.vmax < 10 * image.norm.vmin
            bar.ax.yaxis.set_minor_formatter(plain if narrow else NullFormatter())
        else:
            ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel, title=name)
        ax.set_aspect("equal")
        ax.grid(alpha=0.25)
    ax_xy.invert_yaxis()                  # image coordinates: y grows downwards
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, path, dpi=110)
