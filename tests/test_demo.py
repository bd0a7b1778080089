"""The main job runs end to end and writes its figure."""
from rich.console import Console

from bluelm_v import demo


def test_paper_examples_all_match():
    _, mismatches = demo.paper_examples_table()
    assert mismatches == 0


def test_demo_runs_and_writes_figure(tmp_path):
    console = Console(record=True, width=200)
    assert demo.run(tmp_path, console)
    for name in ("dynres_tiles.png", "chunk_ablation.png"):
        png = tmp_path / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = console.export_text()
    for name in ("document", "receipt", "banner", "screenshot", "photo", "394x390", "LLaVA-NeXT", "InternVL",
                 "768x1536/prefill", "simulated optimum t128"):
        assert name in text


def test_canvas_from_tiles_reassembles_the_canvas():
    import numpy as np

    from bluelm_v.image import preprocess

    img = np.full((300, 1000, 3), 200, np.uint8)
    pre = preprocess(img, "llava_next")
    canvas = demo.canvas_from_tiles(pre.pixels, pre.plan)
    assert canvas.shape == (pre.plan.canvas[1], pre.plan.canvas[0], 3)
    ox, oy = pre.plan.offset
    assert oy > 0  # padded above and below
    assert canvas[oy + 5, ox + 5, 0] == 200 and canvas[oy - 1, 0, 0] == 0
